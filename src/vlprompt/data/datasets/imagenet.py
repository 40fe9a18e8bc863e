"""ImageNet and its four variants (methods.md §1.5).

ImageNet: ``images/{train,val}/<wnid>/*``, labels by sorted wnid folder, names from
``classnames.txt`` ("<wnid> <name words>"); val is also the test split. ImageNet-V2 uses folders
``0`` ... ``999`` (the label) and ImageNet-Sketch the wnid folders, both with ImageNet's 1000 classes.
ImageNet-A and -R hold 200 wnid folders each; their label space is those 200 classes (sorted wnids).
Each variant folder has its own copy of ``classnames.txt``; only test images exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlprompt.data.folder import image_files
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
    """wnid -> class name, in file order."""
    if not path.is_file():
        raise DataError(f"{path} is missing; get {CLASSNAMES_HELP} and put it there")
    names = {}
    for line in path.read_text().splitlines():
        if line.strip():
            wnid, name = line.strip().split(" ", 1)
            names[wnid] = name
    return names


def wnid_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"image folder {folder} is missing")
    return sorted(p for p in folder.iterdir() if p.is_dir())


def read_imagenet_family(name: str, root: str | Path) -> DatasetSplits:
    layout = LAYOUTS[name]
    d = Path(root) / layout.folder
    names = read_classnames(d / "classnames.txt")
    wnids = sorted(names)
    image_root = d / layout.image_dir
    if name == "imagenet":
        classnames = [names[w] for w in wnids]
        label = {w: k for k, w in enumerate(wnids)}

        def read(split):
            return [ImageRecord(str(f), label[p.name], names[p.name])
                    for p in wnid_folders(image_root / split) for f in image_files(p)]

        test = read("val")
        return DatasetSplits(name=name, classnames=classnames, train=read("train"), val=test, test=test,
                             template=COOP[name])
    if layout.by_index:  # label k is the k-th class of classnames.txt, in file order
        classnames = list(names.values())
        test = [ImageRecord(str(f), k, classnames[k])
                for k in range(len(wnids)) for f in image_files(image_root / str(k))]
    else:
        present = [p for p in wnid_folders(image_root) if p.name in names]
        classnames = [names[p.name] for p in present]
        test = [ImageRecord(str(f), k, classnames[k]) for k, p in enumerate(present) for f in image_files(p)]
    return DatasetSplits(name=name, classnames=classnames, train=[], val=[], test=test, template=COOP[name])
