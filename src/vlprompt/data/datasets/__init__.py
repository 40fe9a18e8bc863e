"""The 11 standard benchmark datasets and the ImageNet variants, read from their usual layouts."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from vlprompt.data.datasets import aircraft, imagenet, split_json
from vlprompt.data.records import DatasetSplits
from vlprompt.errors import check_choice

DATASETS: dict[str, Callable[[str | Path], DatasetSplits]] = {
    **{name: partial(split_json.read_split_json_dataset, name) for name in split_json.LAYOUTS},
    "fgvc_aircraft": aircraft.read_aircraft,
    **{name: partial(imagenet.read_imagenet_family, name) for name in imagenet.LAYOUTS},
}


def read_dataset(name: str, root: str | Path) -> DatasetSplits:
    check_choice("dataset", name, sorted(DATASETS))
    return DATASETS[name](root)


def expected_files(name: str, root: str | Path) -> list[tuple[Path, str]]:
    """(path, where to get it) for everything a dataset needs besides the images its splits list."""
    check_choice("dataset", name, sorted(DATASETS))
    if name in split_json.LAYOUTS:
        return split_json.LAYOUTS[name].expected_files(Path(root))
    if name == "fgvc_aircraft":
        return aircraft.expected_files(Path(root))
    return imagenet.expected_files(name, Path(root))
