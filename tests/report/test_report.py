"""The HTML report of a real sweep: tables against numbers computed here from the registry, CSV downloads,
run pages (curves, prompt norms, neural collapse, corruption sweep, storage, errors), and the page in headless Chromium."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import statistics
import sys
from html import escape
from pathlib import Path

import pytest
from html_page import parse
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweep"))
from cdp import Browser, chromium_path  # noqa: E402
from sweep_helpers import SMALL, vlprompt, write_spec  # noqa: E402

METHODS = ["zeroshot", "coop", "coop+nemesis-pun", "coop+qprompt"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("report")
    images = image_folder_factory(root / "images", per_class=4)
    out = root / "out"
    common = {"out": str(out), "preset": "world-methods", "datasets": [f"folder:{images}"],
              "overrides": SMALL + ["data.shots=2", "train.batch_size=2", f"cache_dir={root / 'cache'}"]}
    protocol = write_spec(root / "b2n.yaml", protocol="base_to_new", methods=METHODS, seeds=[1, 2], **common)
    done = vlprompt("sweep", "run", protocol)
    assert done.returncode == 0, done.stderr[-3000:]
    broken = write_spec(root / "broken.yaml", **{**common, "datasets": [f"folder:{root / 'missing'}"]},
                        methods=["coop"], seeds=[1])
    assert vlprompt("sweep", "run", broken).returncode == 1  # one failed run in the same registry
    coop = next(r for r in registry(out) if r["method"] == "coop" and r["seed"] == 1)
    analysed = vlprompt("analyze", "corruption", "--prompt", Path(coop["run_dir"]) / "prompt",
                        "--dataset", f"folder:{images}", "--subset", "base", "--rescale", "0.5,2")
    assert analysed.returncode == 0, analysed.stderr[-3000:]  # written into the run directory: no --out
    report = vlprompt("report", out, "--out", root / "report")
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"report: {root / 'report' / 'index.html'}" in report.stdout
    return out, root / "report"


def registry(out: Path) -> list[dict]:
    with sqlite3.connect(out / "registry.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY rowid")]


def expected_table(out: Path) -> list[list[str]]:
    """Base, New (mean ± sample std over seeds) and H of the means per method, from the registry's results."""
    rows = []
    for method in METHODS:
        results = [json.loads(r["results"]) for r in registry(out) if r["method"] == method and r["state"] == "done"]
        base = [r["metrics"]["base"]["accuracy"] for r in results]
        new = [r["metrics"]["new"]["accuracy"] for r in results]
        b, n = statistics.mean(base), statistics.mean(new)
        h = 2 * b * n / (b + n) if b + n else 0.0
        rows.append([results[0]["dataset"], method, f"{b:.2f} ± {statistics.stdev(base):.2f}",
                     f"{n:.2f} ± {statistics.stdev(new):.2f}", f"{h:.2f}", "2"])
    return rows


def test_index_table_csv_and_raw_numbers_match_the_registry(sweep):
    out, report = sweep
    index = parse(report / "index.html")
    header, *body = index.tables[0]
    assert header == ["Dataset", "Method", "Base", "New", "H", "Seeds"]
    assert body == expected_table(out)
    with open(report / "csv" / "base_to_new.csv") as f:
        assert list(csv.reader(f)) == [header, *expected_table(out)]
    rows = registry(out)
    done = [r for r in rows if r["state"] == "done"]
    (raw_file,) = [link for link in index.links if link.startswith("csv/raw_")]
    raw = list(csv.DictReader(open(report / raw_file)))
    assert len(raw) == 2 * len(done)  # base and new per run
    for line in raw:
        result = json.loads(next(r["results"] for r in done if r["spec_id"] == line["run"]))
        assert float(line["accuracy"]) == result["metrics"][line["evaluated_on"]]["accuracy"]
    for src in index.images:
        with Image.open(report / src) as image:
            assert image.format == "PNG" and image.width > 300
    failed = next(t for t in index.tables if t[0] == ["Run", "Attempts", "Error"])
    (bad,) = [r for r in rows if r["state"] == "failed"]
    assert failed[1] == [bad["spec_id"], "1", bad["error"]] and "DataError" in bad["error"]
    for r in rows:  # every run has its page, linked from the index
        assert f"runs/{r['spec_id']}.html" in index.links and (report / "runs" / f"{r['spec_id']}.html").is_file()


def test_run_pages_show_curves_norms_collapse_storage_and_errors(sweep):
    out, report = sweep
    rows = {r["method"]: r for r in registry(out) if r["seed"] == 1 and r["state"] == "done"}
    nemesis = parse(report / "runs" / f"{rows['coop+nemesis-pun']['spec_id']}.html")
    assert any(src.endswith("_norms.png") for src in nemesis.images)
    qprompt_page = report / "runs" / f"{rows['coop+qprompt']['spec_id']}.html"
    qprompt = parse(qprompt_page)
    artifact = json.loads((Path(rows["coop+qprompt"]["run_dir"]) / "prompt" / "config.json").read_text())
    storage = next(t for t in qprompt.tables if t[0] == ["Tensor", "Codec", "Bytes"])
    for name, entry in artifact["encoded"].items():
        on_disk = (Path(rows["coop+qprompt"]["run_dir"]) / "prompt" / entry["file"]).stat().st_size
        assert [name, entry["codec"], str(on_disk)] in storage
    assert not any(src.endswith("_norms.png") for src in qprompt.images)
    coop = parse(report / "runs" / f"{rows['coop']['spec_id']}.html")
    collapse = next(t for t in coop.tables if t[0][0] == "Evaluated on" and "nc1" in t[0])
    nc1 = collapse[0].index("nc1")
    written = json.loads((Path(rows["coop"]["run_dir"]) / "neural_collapse.json").read_text())
    assert [r[nc1] for r in collapse[1:]] == [f"{written[s]['nc1']:.4f}" for s in ("base", "new")]
    with open(Path(rows["coop"]["run_dir"]) / "corruption" / "corruption.csv") as f:
        sweep_rows = list(csv.DictReader(f))
    moved = [r for r in sweep_rows if float(r["norm_after"]) != float(r["norm_before"])]
    lowered = [r for r in moved if float(r["norm_after"]) < float(r["norm_before"])]
    raised = [r for r in moved if float(r["norm_after"]) > float(r["norm_before"])]
    rose = [sum(float(r["accuracy_change"]) > 0 for r in group) for group in (lowered, raised)]
    baseline = float(sweep_rows[0]["accuracy"]) - float(sweep_rows[0]["accuracy_change"])
    corruption = next(t for t in coop.tables if t[0][0] == "original accuracy (%)")
    assert corruption == [["original accuracy (%)", f"{baseline:.2f}"],
                          ["Low-Norm Effect frequency", f"{rose[0]} of {len(sweep_rows)}"],
                          ["accuracy rose where the norm was lowered", f"{rose[0]} of {len(lowered)}"],
                          ["accuracy rose where the norm was raised", f"{rose[1]} of {len(raised)}"]]
    assert len(sweep_rows) == 4 * 4 and len(raised) == 4  # 4 positions x (σ=0, α=0.001, 0.5, 2); α=2 raises
    assert any(src.endswith("_corruption.png") for src in coop.images)
    assert not any(src.endswith("_corruption.png") for src in nemesis.images)
    epochs = len((Path(rows["coop"]["run_dir"]) / "metrics.jsonl").read_text().splitlines())
    assert epochs == 2 and any(src.endswith("_metrics.png") for src in coop.images)
    for page in (nemesis, qprompt, coop):
        for src in page.images:
            assert (report / "runs" / src).resolve().is_file()
    (bad,) = [r for r in registry(out) if r["state"] == "failed"]
    assert f"<pre>{escape(bad['error'])}</pre>" in (report / "runs" / f"{bad['spec_id']}.html").read_text()


def test_report_of_a_folder_of_runs_without_registry(sweep, tmp_path):
    out, _ = sweep
    shutil.copytree(out / "runs", tmp_path / "runs")  # run directories only, moved away from their registry
    done = vlprompt("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr[-3000:]
    header, *body = parse(tmp_path / "report" / "index.html").tables[0]
    assert header == ["Dataset", "Method", "Setting", "base", "new", "Seeds"]
    found = {}
    for path in (tmp_path / "runs").glob("*/results.json"):
        r = json.loads(path.read_text())
        found.setdefault("+".join([r["method"], *r["regularizers"]]), []).append(r["metrics"])
    assert len(body) == len(found) == len(METHODS)
    for dataset, method, setting, base, new, seeds in body:
        metrics = found[method]
        assert setting == "shots=2" and seeds == "2"
        for cell, subset in ((base, "base"), (new, "new")):
            values = [m[subset]["accuracy"] for m in metrics]
            assert cell == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def test_report_refuses_to_replace_a_folder_that_is_not_a_report(sweep, tmp_path):
    out, _ = sweep
    (tmp_path / "notes.txt").write_text("mine")
    done = vlprompt("report", out, "--out", tmp_path)
    assert done.returncode == 2 and "is not a vlprompt report" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (CI installs the Debian package)")
def test_report_in_headless_chromium(sweep, tmp_path):
    out, report = sweep
    browser = Browser(chromium_path())
    try:
        browser.open_page()
        browser.navigate((report / "index.html").as_uri())
        assert browser.errors() == []
        cells = browser.evaluate("Array.from(document.querySelector('table.sortable').tBodies[0].rows)"
                                 ".map(r => Array.from(r.cells).map(c => c.textContent))")
        assert cells == expected_table(out)
        images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert images and all(complete and width > 0 for complete, width in images)
        # a click on "New" sorts by the mean (stable, ascending); a second click reverses
        browser.evaluate("document.querySelectorAll('table.sortable')[0].tHead.rows[0].cells[3].click()")
        order = browser.evaluate("Array.from(document.querySelector('table.sortable').tBodies[0].rows)"
                                 ".map(r => r.cells[1].textContent)")
        assert order == [r[1] for r in sorted(expected_table(out), key=lambda r: float(r[3].split()[0]))]
        browser.screenshot(tmp_path / "report.png")
        with Image.open(tmp_path / "report.png") as shot:
            assert shot.width >= 1000 and shot.height > 600
        run_page = report / "runs" / f"{registry(out)[0]['spec_id']}.html"
        browser.navigate(run_page.as_uri())
        assert browser.errors() == []
        assert all(c and w > 0 for c, w in browser.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"))
    finally:
        browser.close()
