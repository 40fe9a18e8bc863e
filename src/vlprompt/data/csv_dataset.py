"""Users' own images listed in a CSV file with columns ``path,label`` and an optional ``split``.

Labels are class names (sorted to give label ids); relative paths are resolved against ``root`` or
the CSV file's folder. Without a split column the rows are split per class from a seed, as an
image folder without train/val/test sub-folders is.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from vlprompt.data.folder import check_fractions, split_class
from vlprompt.data.records import SPLITS, DatasetSplits, ImageRecord
from vlprompt.errors import DataError


def read_csv_dataset(path: str | Path, *, root: str | Path | None = None, template: str = "a photo of a {}.",
                     val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 1) -> DatasetSplits:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist; it needs the columns path,label[,split]")
    base = Path(root) if root else path.parent
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        missing = {"path", "label"} - columns
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; expected path,label[,split]")
        rows = list(reader)
    has_split = "split" in columns
    for line, r in enumerate(rows, 2):  # line 1 is the header
        if not (r["path"] or "").strip() or not (r["label"] or "").strip():
            raise DataError(f"{path} line {line}: path and label must not be empty")
        if has_split and r["split"] not in SPLITS:
            raise DataError(f"{path} line {line}: split {r['split']!r} is not one of {', '.join(SPLITS)}")
    classnames = sorted({r["label"] for r in rows})
    if not classnames:
        raise DataError(f"{path} has no rows")
    label = {name: k for k, name in enumerate(classnames)}

    def record(r: dict) -> ImageRecord:
        p = Path(r["path"])
        return ImageRecord(str(p if p.is_absolute() else base / p), label[r["label"]], r["label"])

    splits: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    if has_split:
        for r in rows:
            splits[r["split"]].append(record(r))
        without_training = [name for name in classnames if not any(r.classname == name for r in splits["train"])]
        if without_training:
            raise DataError(f"{path}: class {without_training[0]!r} has no row with split 'train'; "
                            "every class needs training images")
    else:
        check_fractions(val_fraction, test_fraction)
        rng = random.Random(seed)
        for name in classnames:
            mine = [record(r) for r in rows if r["label"] == name]
            for split, chosen in split_class(mine, rng, val_fraction, test_fraction, f"{path}: class {name!r}").items():
                splits[split] += chosen
    return DatasetSplits(name=path.stem, classnames=classnames, template=template, **splits)
