"""Run pages carried over from the report being replaced: a page is rendered again only when what it shows changed.

A page's fingerprint is the run's registry row (state, results, error, attempts, times, config) and
the size and modification time of every file of its run directory that the page reads (the analysis
stage's outputs, the corruption sweep, the artifact's storage). The registry alone would miss an
analysis written after the run finished (``vlprompt analyze corruption``); the files alone would miss
a row that failed or was reset. Files are compared by size and nanosecond mtime, not by content:
vlprompt replaces a file whole, which gives it a new mtime, and hashing hundreds of images each time
would cost what the cache saves. The renderer's own source is part of the manifest, so a page layout
changed by a new vlprompt renders every page again. Carried pages and their images are hard links to
the earlier report's files (see ``io.place_file``), so carrying one costs no copy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vlprompt.io import place_file, write_json
from vlprompt.sweep.registry import Row

MANIFEST = ".vlprompt-pages.json"
MANIFEST_FORMAT = "vlprompt-report-pages/1"


def fingerprint(row: Row, inputs: list[Path]) -> str:
    """What a run page shows, in one digest: the row and the stat of each file it reads (absent ones too)."""
    digest = hashlib.sha256(json.dumps(vars(row), sort_keys=True, default=str).encode())  # its fields are JSON data
    for path in inputs:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}\0absent\n".encode())
    return digest.hexdigest()


class PageCache:
    """The pages of the report at ``previous`` (when it is one, written by the same renderer) and those of the new one."""

    def __init__(self, previous: Path, renderer: str):
        self.previous, self.renderer = previous, renderer
        self.old = self._read(previous / MANIFEST)
        self.pages: dict[str, dict] = {}
        self.carried = 0

    def _read(self, path: Path) -> dict:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            return {}
        return manifest["pages"] if manifest.get("renderer") == self.renderer else {}

    def carry(self, spec_id: str, stamp: str, into: Path) -> bool:
        """Link the earlier page of ``spec_id`` and its images into ``into`` when its fingerprint is unchanged."""
        old = self.old.get(spec_id)
        if old is None or old["fingerprint"] != stamp:
            return False
        if not all(_own_file(name) and (self.previous / name).is_file() for name in old["files"]):
            return False
        for name in old["files"]:
            place_file(self.previous / name, into / name)
        self.add(spec_id, stamp, old["files"])
        self.carried += 1
        return True

    def add(self, spec_id: str, stamp: str, files: list[str]) -> None:
        """Record a page of the new report: its fingerprint and its files, relative to the report folder."""
        self.pages[spec_id] = {"fingerprint": stamp, "files": files}

    def write(self, into: Path) -> None:
        write_json(into / MANIFEST, {"format": MANIFEST_FORMAT, "renderer": self.renderer, "pages": self.pages})


def _own_file(name: str) -> bool:
    """Whether a manifest entry names a file of a report's ``runs/`` or ``img/`` folder, and nothing outside."""
    parts = Path(name).parts
    return len(parts) == 2 and parts[0] in ("runs", "img") and parts[1] not in ("..", ".")
