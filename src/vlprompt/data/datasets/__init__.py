"""The 11 standard benchmark datasets and the ImageNet variants, read from their usual layouts."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from vlprompt.data.datasets import aircraft, imagenet, split_json
from vlprompt.data.records import DatasetSplits
from vlprompt.errors import check_choice
from vlprompt.registry import Registry

#: standard dataset name -> reader of its root folder
DATASETS: Registry[Callable[[str | Path], DatasetSplits]] = Registry("dataset")
register_dataset = DATASETS.register
for _name in split_json.LAYOUTS:
    register_dataset(_name)(partial(split_json.read_split_json_dataset, _name))
register_dataset("fgvc_aircraft")(aircraft.read_aircraft)
for _name in imagenet.LAYOUTS:
    register_dataset(_name)(partial(imagenet.read_imagenet_family, _name))


def read_dataset(name: str, root: str | Path) -> DatasetSplits:
    return DATASETS.get(name)(root)


def expected_files(name: str, root: str | Path) -> list[tuple[Path, str]]:
    """(path, where to get it) for everything a dataset needs besides the images its splits list."""
    check_choice("dataset", name, sorted(DATASETS))
    if name in split_json.LAYOUTS:
        return split_json.LAYOUTS[name].expected_files(Path(root))
    if name == "fgvc_aircraft":
        return aircraft.expected_files(Path(root))
    return imagenet.expected_files(name, Path(root))


def dataset_folder(name: str) -> str:
    """The dataset's folder under the data root, as CoOp's DATASETS.md names it."""
    check_choice("dataset", name, sorted(DATASETS))
    if name in split_json.LAYOUTS:
        return split_json.LAYOUTS[name].folder
    if name == "fgvc_aircraft":
        return aircraft.FOLDER
    return imagenet.LAYOUTS[name].folder


def image_base(name: str, root: str | Path) -> Path:
    """The folder the dataset's image paths are written relative to in a split file (CoOp's image folder)."""
    d = Path(root) / dataset_folder(name)
    if name in split_json.LAYOUTS:
        return d / split_json.LAYOUTS[name].image_dir
    if name == "fgvc_aircraft":
        return d / "images"
    return d / imagenet.LAYOUTS[name].image_dir
