"""Datasets read from CoOp's ``split_zhou_<Name>.json`` files (methods.md §1.5).

The JSON holds ``{"train"|"val"|"test": [[relative path, label, class name], ...]}``; paths are
relative to the dataset's image folder and class names are already processed as the reference
processes them (e.g. EuroSAT's "Annual Crop Land", Cars' year moved to the front).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlprompt.data.records import SPLITS, DatasetSplits, ImageRecord
from vlprompt.data.templates import COOP
from vlprompt.errors import DataError

SPLITS_HELP = "CoOp's split files split_zhou_*.json, linked from DATASETS.md of KaiyangZhou/CoOp"


@dataclass(frozen=True)
class SplitJsonLayout:
    name: str  # registry name
    folder: str  # under the data root
    image_dir: str  # under the dataset folder; JSON paths are relative to it
    split_file: str
    source: str  # where to get the images

    def dataset_dir(self, root: Path) -> Path:
        return Path(root) / self.folder

    def expected_files(self, root: Path) -> list[tuple[Path, str]]:
        d = self.dataset_dir(root)
        return [(d / self.image_dir, self.source), (d / self.split_file, SPLITS_HELP)]


LAYOUTS = {
    layout.name: layout
    for layout in (
        SplitJsonLayout("caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                        "Caltech101: 101_ObjectCategories.tar.gz from the Caltech data site"),
        SplitJsonLayout("oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json",
                        "Oxford-IIIT Pets: images.tar.gz and annotations.tar.gz from the VGG site"),
        SplitJsonLayout("stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json",
                        "Stanford Cars: cars_train, cars_test and the devkit"),
        SplitJsonLayout("oxford_flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                        "Oxford Flowers 102: 102flowers.tgz (jpg/) and imagelabels.mat from the VGG site"),
        SplitJsonLayout("food101", "food-101", "images", "split_zhou_Food101.json",
                        "Food-101: food-101.tar.gz from the ETH site"),
        SplitJsonLayout("sun397", "sun397", "SUN397", "split_zhou_SUN397.json",
                        "SUN397: SUN397.tar.gz from the SUN database site"),
        SplitJsonLayout("dtd", "dtd", "images", "split_zhou_DescribableTextures.json",
                        "DTD: dtd-r1.0.1.tar.gz from the Oxford VGG site"),
        SplitJsonLayout("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json",
                        "EuroSAT: EuroSAT.zip (RGB) unpacked as 2750/"),
        SplitJsonLayout("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
                        "UCF101 mid-frames: UCF-101-midframes.zip from CoOp's dataset instructions"),
    )
}


def read_split_file(path: Path, image_dir: Path | None) -> dict[str, list[ImageRecord]]:
    """The three splits of a split_zhou file; paths relative to ``image_dir`` (None: kept as written, e.g. keys)."""
    if not path.is_file():
        raise DataError(f"split file {path} is missing; download it ({SPLITS_HELP}) into {path.parent}")
    try:
        content = json.loads(path.read_text())
        return {s: [ImageRecord(rel if image_dir is None else str(image_dir / rel), int(label), name)
                    for rel, label, name in content[s]] for s in SPLITS}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"split file {path} is not in the split_zhou format ({exc}); download it again") from exc


def classnames_of(records: list[ImageRecord]) -> list[str]:
    names: dict[int, str] = {}
    for r in records:
        names.setdefault(r.label, r.classname)
    return [names[k] for k in sorted(names)]


def read_split_json_dataset(name: str, root: str | Path) -> DatasetSplits:
    layout = LAYOUTS[name]
    d = layout.dataset_dir(root)
    if not d.is_dir():
        raise DataError(f"dataset folder {d} is missing; create it with {layout.image_dir or 'the image folders'} "
                        f"from {layout.source} and {layout.split_file} ({SPLITS_HELP})")
    image_dir = d / layout.image_dir
    splits = read_split_file(d / layout.split_file, image_dir)
    return DatasetSplits(name=name, classnames=classnames_of(splits["train"] + splits["test"]),
                         template=COOP[name], **splits)
