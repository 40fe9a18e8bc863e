"""Users' own images: a folder with one sub-folder per class.

Either ``ROOT/{train,val,test}/<class>/<image>`` (splits given), or ``ROOT/<class>/<image>`` split
per class deterministically from a seed and fractions. Class names are the folder names (sorted;
underscores become spaces at prompt time).
"""

from __future__ import annotations

import random
from pathlib import Path

from vlprompt.data.records import SPLITS, DatasetSplits, ImageRecord
from vlprompt.errors import ConfigError, DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_folder(root: str | Path, *, template: str = "a photo of a {}.", val_fraction: float = 0.2,
                      test_fraction: float = 0.2, seed: int = 1) -> DatasetSplits:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass a folder with one sub-folder per class")
    if all((root / s).is_dir() for s in SPLITS):
        classnames = [p.name for p in class_folders(root / "train")]
        label = {name: k for k, name in enumerate(classnames)}
        splits = {}
        for split in SPLITS:
            records = []
            for folder in class_folders(root / split):
                if folder.name not in label:
                    raise DataError(f"class folder {folder} has no counterpart in {root / 'train'}; "
                                    "every class needs training images")
                records += [ImageRecord(str(f), label[folder.name], folder.name) for f in image_files(folder)]
            splits[split] = records
    else:
        if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ConfigError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                              "fractions leaving some images for training")
        classnames = [p.name for p in class_folders(root)]
        splits = {s: [] for s in SPLITS}
        rng = random.Random(seed)
        for k, folder in enumerate(class_folders(root)):
            files = image_files(folder)
            rng.shuffle(files)
            n_test = max(1, round(len(files) * test_fraction))
            n_val = round(len(files) * val_fraction)
            parts = {"test": files[:n_test], "val": files[n_test:n_test + n_val], "train": files[n_test + n_val:]}
            for split, chosen in parts.items():
                splits[split] += [ImageRecord(str(f), k, folder.name) for f in sorted(chosen)]
    if not classnames:
        raise DataError(f"no class sub-folders in {root}; expected ROOT/<class>/<image> or ROOT/train/<class>/...")
    if not splits["train"]:
        raise DataError(f"no training images found under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return DatasetSplits(name=root.name, classnames=classnames, template=template, **splits)
