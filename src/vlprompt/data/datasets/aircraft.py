"""FGVC-Aircraft with its official text splits (methods.md §1.5).

``variants.txt`` lists the 100 class names in label order; ``images_variant_{train,val,test}.txt``
have lines "<image id> <variant name>", the image being ``images/<id>.jpg``.
"""

from __future__ import annotations

from pathlib import Path

from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.templates import COOP
from vlprompt.errors import DataError

FOLDER = "fgvc_aircraft"
SOURCE = "FGVC-Aircraft: fgvc-aircraft-2013b.tar.gz, its data/ folder (images/, variants.txt, images_variant_*.txt)"


def expected_files(root: Path) -> list[tuple[Path, str]]:
    d = Path(root) / FOLDER
    files = [(d / "images", SOURCE), (d / "variants.txt", SOURCE)]
    return files + [(d / f"images_variant_{s}.txt", SOURCE) for s in ("train", "val", "test")]


def read_aircraft(root: str | Path) -> DatasetSplits:
    d = Path(root) / FOLDER
    for path, help_text in expected_files(root)[1:]:
        if not path.is_file():
            raise DataError(f"{path} is missing; it comes with {help_text}")
    classnames = [line.strip() for line in (d / "variants.txt").read_text().splitlines() if line.strip()]
    label = {name: k for k, name in enumerate(classnames)}
    splits = {}
    for split in ("train", "val", "test"):
        records = []
        split_file = d / f"images_variant_{split}.txt"
        for number, line in enumerate(split_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")  # variant names contain spaces
            if variant not in label:
                raise DataError(f"{split_file} line {number}: variant {variant!r} is not in variants.txt; "
                                f"both files must come from the same {SOURCE}")
            records.append(ImageRecord(str(d / "images" / f"{image_id}.jpg"), label[variant], variant))
        splits[split] = records
    return DatasetSplits(name="fgvc_aircraft", classnames=classnames, template=COOP["fgvc_aircraft"], **splits)
