"""ImageNet and its four variants (methods.md §1.5).

ImageNet: ``images/{train,val}/<wnid>/*``, labels by sorted wnid folder, names from
``classnames.txt`` ("<wnid> <name words>"); val is also the test split. ImageNet-V2 uses folders
``0`` ... ``999`` (the label) and ImageNet-Sketch the wnid folders, both with ImageNet's 1000 classes.
ImageNet-A and -R hold 200 wnid folders each (plus a README.txt); their label space is those 200
classes (sorted wnids). Each variant folder has its own copy of ``classnames.txt``; only test
images exist. Labels follow the sorted wnid folders; within a class every non-hidden file is an
image, as in the reference (which lists them in file-system order; we sort them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.templates import COOP
from vlprompt.errors import DataError

CLASSNAMES_HELP = "classnames.txt (one '<wnid> <class name>' line per class) from CoOp's dataset instructions"


@dataclass(frozen=True)
class ImageNetLayout:
    name: str
    folder: str
    image_dir: str
    source: str
    by_index: bool = False  # ImageNet-V2: folders named by label index


LAYOUTS = {
    layout.name: layout
    for layout in (
        ImageNetLayout("imagenet", "imagenet", "images", "ILSVRC2012 train and val, one folder per wnid"),
        ImageNetLayout("imagenetv2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                       "ImageNetV2 matched-frequency (imagenetv2-matched-frequency.tar.gz)", by_index=True),
        ImageNetLayout("imagenet_sketch", "imagenet-sketch", "images", "ImageNet-Sketch (one folder per wnid)"),
        ImageNetLayout("imagenet_a", "imagenet-adversarial", "imagenet-a", "ImageNet-A (imagenet-a.tar)"),
        ImageNetLayout("imagenet_r", "imagenet-rendition", "imagenet-r", "ImageNet-R (imagenet-r.tar)"),
    )
}


def expected_files(name: str, root: Path) -> list[tuple[Path, str]]:
    layout = LAYOUTS[name]
    d = Path(root) / layout.folder
    return [(d / layout.image_dir, layout.source), (d / "classnames.txt", CLASSNAMES_HELP)]


def read_classnames(path: Path) -> dict[str, str]:
    """wnid -> class name, in file order ("<wnid> <name words>" per line)."""
    if not path.is_file():
        raise DataError(f"{path} is missing; get {CLASSNAMES_HELP} and put it there")
    names = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            if not name:
                raise DataError(f"{path} line {number} has no class name after {wnid!r}; get {CLASSNAMES_HELP} again")
            names[wnid] = name
    return names


def class_folders(folder: Path, names: dict[str, str], classnames_file: Path) -> list[Path]:
    """The wnid folders under ``folder``, sorted, each checked against classnames.txt."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} is missing; unpack the dataset's images there")
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in names]
    if unknown:
        raise DataError(f"class folder {folder / unknown[0]} is not listed in {classnames_file}; "
                        "remove the folder or use the classnames.txt of the same dataset")
    return folders


def listed_images(folder: Path) -> list[Path]:
    """Every non-hidden file of a class folder, as the reference lists them, sorted so that the
    order (and hence the few-shot selection) does not depend on the file system."""
    if not folder.is_dir():
        raise DataError(f"class folder {folder} is missing; unpack the dataset's images there")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_imagenet_family(name: str, root: str | Path) -> DatasetSplits:
    layout = LAYOUTS[name]
    d = Path(root) / layout.folder
    classnames_file = d / "classnames.txt"
    names = read_classnames(classnames_file)
    image_root = d / layout.image_dir
    if name == "imagenet":
        train_folders = class_folders(image_root / "train", names, classnames_file)
        label = {p.name: k for k, p in enumerate(train_folders)}
        val_folders = class_folders(image_root / "val", names, classnames_file)
        stray = [p for p in val_folders if p.name not in label]
        if stray:
            raise DataError(f"validation class folder {stray[0]} has no training folder in {image_root / 'train'}; "
                            "the labels of train and val would disagree")

        def read(folders: list[Path]) -> list[ImageRecord]:
            return [ImageRecord(str(f), label[p.name], names[p.name]) for p in folders for f in listed_images(p)]

        test = read(val_folders)  # the ImageNet validation set is both val and test
        return DatasetSplits(name=name, classnames=[names[p.name] for p in train_folders], train=read(train_folders),
                             val=test, test=test, template=COOP[name])
    if layout.by_index:  # label k is the k-th line of classnames.txt and its images are in folder "k"
        classnames = list(names.values())
        test = [ImageRecord(str(f), k, classnames[k])
                for k in range(len(classnames)) for f in listed_images(image_root / str(k))]
    else:  # the label space is the wnid folders present: 1000 for Sketch, 200 for -A and -R
        folders = class_folders(image_root, names, classnames_file)
        classnames = [names[p.name] for p in folders]
        test = [ImageRecord(str(f), k, classnames[k]) for k, p in enumerate(folders) for f in listed_images(p)]
    return DatasetSplits(name=name, classnames=classnames, train=[], val=[], test=test, template=COOP[name])
