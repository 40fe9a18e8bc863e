"""Resumable downloads of the datasets' files: ``NAME.part`` until complete and verified, then ``NAME``.

An interrupted download leaves ``NAME.part``; the next call asks the server for the rest (an HTTP
Range request) and appends it, or starts over when the server sends the whole file instead. A
finished file whose checksum differs from the published one is removed with an error that names
both digests and where the expected one was published; the final name only ever holds a verified
file (or one for which nobody publishes a checksum). An existing final file is never replaced.
"""

from __future__ import annotations

import http.client
import math
import os
import urllib.error
import urllib.request
from pathlib import Path

from vlprompt.data.archives import MIB, checksum_problem
from vlprompt.errors import DataError
from vlprompt.io import writing
from vlprompt.progress import Progress

TIMEOUT_S = 60
USER_AGENT = "vlprompt-data-prepare"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: Path, checksum: str | None = None, checksum_source: str | None = None) -> Path:
    """Fetch ``url`` into ``dest`` (resuming ``dest.part``), check it against ``checksum``, rename it into place."""
    dest = Path(dest)
    if dest.exists():
        return dest
    part = part_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: nothing left to send, the part may be complete
            raise DataError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; check the address or fetch "
                            f"{dest.name} by hand into {dest.parent}") from exc
        response = None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"cannot reach {url} ({getattr(exc, 'reason', exc)}); this machine may be offline: "
                        f"download {dest.name} elsewhere and pass its folder with --from") from exc
    if response is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:  # the server ignored the range: it sends the whole file again
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with writing(part), open(part, "ab" if resumed else "wb") as out:
                blocks = iter(lambda: response.read(MIB), b"")
                shown = Progress(blocks, f"download {dest.name}", unit="MiB", initial=offset // MIB,
                                 total=math.ceil(total / MIB) if total else None)
                try:
                    for block in shown:
                        out.write(block)
                except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:  # the network, not the disk
                    raise DataError(f"the download of {url} broke off after {out.tell()} bytes ({exc}); run the "
                                    f"same command again to resume it from {part}") from exc
            if total is not None and part.stat().st_size != total:
                raise DataError(f"the download of {url} stopped at {part.stat().st_size} of {total} bytes; run the "
                                f"same command again to resume it from {part}")
    problem = checksum_problem(part, checksum)
    if problem:
        part.unlink()
        raise DataError(f"downloaded {dest.name} does not match its published checksum ({problem}; checksum from "
                        f"{checksum_source}); the download was removed: run the command again, and if it fails the "
                        "same way the file at the address has changed")
    os.replace(part, dest)
    return dest
