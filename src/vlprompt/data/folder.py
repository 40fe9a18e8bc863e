"""Users' own images: a folder with one sub-folder per class.

Either ``ROOT/{train,val,test}/<class>/<image>`` (splits given), or ``ROOT/<class>/<image>`` split
per class deterministically from a seed and fractions. Class names are the folder names (sorted;
underscores become spaces at prompt time).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TypeVar

from vlprompt.data.records import SPLITS, DatasetSplits, ImageRecord
from vlprompt.errors import ConfigError, DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Item = TypeVar("Item")


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be fractions "
                          "(test above 0) that leave some images for training")


def split_class(items: list[Item], rng: random.Random, val_fraction: float, test_fraction: float,
                where: str) -> dict[str, list[Item]]:
    """One class's items shuffled by ``rng`` and cut into test (at least one), val and train (the rest)."""
    items = list(items)
    rng.shuffle(items)
    n_test = max(1, round(len(items) * test_fraction))
    n_val = round(len(items) * val_fraction)
    if n_test + n_val >= len(items):
        raise DataError(f"{where} has {len(items)} image(s): too few to keep a test image and a training image "
                        f"(val_fraction={val_fraction}, test_fraction={test_fraction}); add images or give "
                        "train/val/test explicitly")
    return {"test": items[:n_test], "val": items[n_test:n_test + n_val], "train": items[n_test + n_val:]}


def read_image_folder(root: str | Path, *, template: str = "a photo of a {}.", val_fraction: float = 0.2,
                      test_fraction: float = 0.2, seed: int = 1) -> DatasetSplits:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass a folder with one sub-folder per class")
    splits: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    if all((root / s).is_dir() for s in SPLITS):
        classnames = [p.name for p in class_folders(root / "train")]
        label = {name: k for k, name in enumerate(classnames)}
        for split in SPLITS:
            for folder in class_folders(root / split):
                if folder.name not in label:
                    raise DataError(f"class folder {folder} has no counterpart in {root / 'train'}; "
                                    "every class needs training images")
                files = image_files(folder)
                if split == "train" and not files:
                    raise DataError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                    "add some or remove the folder")
                splits[split] += [ImageRecord(str(f), label[folder.name], folder.name) for f in files]
    else:
        check_fractions(val_fraction, test_fraction)
        classnames = [p.name for p in class_folders(root)]
        rng = random.Random(seed)
        for k, folder in enumerate(class_folders(root)):
            parts = split_class(image_files(folder), rng, val_fraction, test_fraction, f"class folder {folder}")
            for split, chosen in parts.items():
                splits[split] += [ImageRecord(str(f), k, folder.name) for f in sorted(chosen)]
    if not classnames:
        raise DataError(f"no class sub-folders in {root}; expected ROOT/<class>/<image> or ROOT/train/<class>/...")
    return DatasetSplits(name=root.name, classnames=classnames, template=template, **splits)
