"""The data model every reader produces: labelled image records grouped into train/val/test splits.

A record names its image by a string key: a file path for data on disk, or a ``scheme://...`` key
for images generated on demand (the synthetic world). ``DatasetSplits.load_image`` turns a record
into a PIL image; the feature cache keys on the record keys, so they must identify the pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from vlprompt.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    path: str
    label: int
    classname: str


def load_image_file(record: ImageRecord) -> Image.Image:
    """Open an image file as RGB, with an error that names the file when it is missing or corrupt."""
    path = Path(record.path)
    if not path.is_file():
        raise DataError(f"image file {path} (class {record.classname!r}) is missing; restore it or remove it from the split")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:
        raise DataError(f"image file {path} cannot be decoded ({exc}); replace it with a readable image or remove it") from exc


#: (path, size, mtime) of files this process has decoded without error: a sweep's runs check a folder once
_DECODED: set[tuple[str, int, int]] = set()


def image_problem(path: str) -> str | None:
    """Why the image file at ``path`` cannot be used (missing or not decodable), or None when it decodes.

    JPEGs decode at a reduced scale (``draft``): every byte is still read, at a fraction of the cost.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path}: missing"
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key in _DECODED:
        return None
    if not Path(path).is_file():
        return f"{path}: not a file"
    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))
            img.load()
    except Exception as exc:  # PIL raises many types for bad files; each means "not an image we can read"
        return f"{path}: cannot be decoded ({exc})"
    _DECODED.add(key)
    return None


def unreadable_images(records: list[ImageRecord], threads: int | None = None) -> list[str]:
    """One line per distinct image file of ``records`` that is missing or does not decode, in record order."""
    paths = list(dict.fromkeys(r.path for r in records))
    threads = threads or min(8, os.cpu_count() or 1)  # decoding releases the GIL
    with ThreadPoolExecutor(threads) as pool:
        return [p for p in pool.map(image_problem, paths) if p is not None]


@dataclass
class DatasetSplits:
    """A dataset as the engine sees it: class names, three splits and its hand-crafted template."""

    name: str
    classnames: list[str]
    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]
    template: str = "a photo of a {}."
    image_loader: Callable[[ImageRecord], Image.Image] = field(default=load_image_file, repr=False)

    def split(self, name: str) -> list[ImageRecord]:
        if name not in SPLITS:
            raise DataError(f"split {name!r} does not exist; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def load_image(self, record: ImageRecord) -> Image.Image:
        return self.image_loader(record)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def summary(self) -> str:
        """What a run will use, e.g. ``6 classes; images: train 96, val 24, test 60``."""
        return f"{self.num_classes} classes; images: " + ", ".join(f"{s} {len(self.split(s))}" for s in SPLITS)

    def with_splits(self, **fields) -> DatasetSplits:
        """A copy with some splits (or other fields) replaced: few-shot sampling, class subsets."""
        return replace(self, **fields)
