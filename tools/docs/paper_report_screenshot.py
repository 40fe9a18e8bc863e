"""Draw docs/images/report_paper_columns.png: the "Our numbers beside the papers'" section of the report that
tests/report/test_paper_columns.py writes (its measured values are the test's made-up ones), in headless Chromium.

    PYTHONPATH=src python tools/docs/paper_report_screenshot.py [OUT.png]
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

from PIL import Image

TESTS = Path(__file__).resolve().parents[2] / "tests" / "report"
sys.path.insert(0, str(TESTS))
from cdp import Browser, chromium_path  # noqa: E402
from test_paper_columns import write_fixture_report  # noqa: E402

# the box from the section's heading to the end of its first table, in page coordinates
SECTION_BOX = """(() => {
  const h = Array.from(document.querySelectorAll('h2')).find(e => e.textContent.startsWith('Our numbers'));
  const table = h.parentElement.querySelector('.paper table');
  const a = h.getBoundingClientRect(), z = table.getBoundingClientRect();
  return [a.left + window.scrollX - 10, a.top + window.scrollY - 10, Math.max(z.right, a.right) - a.left + 20,
          z.bottom - a.top + 20];
})()"""


def main(out_png: Path) -> None:
    binary = chromium_path()
    if binary is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        report = write_fixture_report(Path(tmp))
        browser = Browser(binary)
        try:
            browser.open_page()
            browser.send("Emulation.setDeviceMetricsOverride", width=1900, height=1000, deviceScaleFactor=1,
                         mobile=False)
            browser.navigate((report / "index.html").as_uri())
            x, y, width, height = browser.evaluate(SECTION_BOX)
            shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                clip={"x": x, "y": y, "width": width, "height": height, "scale": 1})
        finally:
            browser.close()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.write_bytes(base64.b64decode(shot["data"]))
    with Image.open(out_png) as image:  # a palette keeps the picture sharp and the file small
        image.convert("RGB").quantize(colors=64).save(out_png, optimize=True)
    print(out_png)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/images/report_paper_columns.png"))
