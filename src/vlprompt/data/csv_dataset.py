"""Users' own images listed in a CSV file with columns ``path,label`` and an optional ``split``.

Labels are class names (sorted to give label ids); relative paths are resolved against ``root`` or
the CSV file's folder. Without a split column the rows are split per class from a seed.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

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
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; expected path,label[,split]")
        rows = list(reader)
    has_split = "split" in (rows[0] if rows else {})
    bad = [r["split"] for r in rows if has_split and r["split"] not in SPLITS]
    if bad:
        raise DataError(f"{path}: split {bad[0]!r} is not one of {', '.join(SPLITS)}")
    classnames = sorted({r["label"] for r in rows})
    if not classnames:
        raise DataError(f"{path} has no rows")
    label = {name: k for k, name in enumerate(classnames)}

    def record(r: dict) -> ImageRecord:
        p = Path(r["path"])
        return ImageRecord(str(p if p.is_absolute() else base / p), label[r["label"]], r["label"])

    splits = {s: [] for s in SPLITS}
    if has_split:
        for r in rows:
            splits[r["split"]].append(record(r))
    else:
        rng = random.Random(seed)
        for name in classnames:
            mine = [record(r) for r in rows if r["label"] == name]
            rng.shuffle(mine)
            n_test = max(1, round(len(mine) * test_fraction))
            n_val = round(len(mine) * val_fraction)
            splits["test"] += mine[:n_test]
            splits["val"] += mine[n_test:n_test + n_val]
            splits["train"] += mine[n_test + n_val:]
    return DatasetSplits(name=path.stem, classnames=classnames, template=template, **splits)
