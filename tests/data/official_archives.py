"""Tiny copies of the official dataset files, in their real names, formats and inner layouts.

Each is packed from the miniature data root (miniature_datasets.py) the way the publisher packs the
real one: Caltech's ``101_ObjectCategories/`` in a .tar.gz inside ``caltech-101.zip``, Food-101's
``food-101/`` top folder, FGVC-Aircraft's ``fgvc-aircraft-2013b/data/``, EuroSAT's ``2750/`` in a
zip, Flowers' labels in a MATLAB ``imagelabels.mat``, ImageNet's train tar of per-class tars, its
flat val tar and the devkit's ``meta.mat`` and ground truth.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from miniature_datasets import WNIDS

VAL_ORDER = [3, 0, 5, 1, 7, 2, 6, 4]  # ILSVRC2012_val_0000000{k+1} is the k-th of these miniature val images


def _members(folder: Path, arc_prefix: str) -> dict[str, Path]:
    return {f"{arc_prefix}/{p.relative_to(folder).as_posix()}": p for p in sorted(folder.rglob("*")) if p.is_file()}


def make_tar(path: Path, members: dict[str, Path | bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for arcname, content in members.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, members: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, content in members.items():
            zf.writestr(arcname, content.read_bytes() if isinstance(content, Path) else content)
    return path


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def pack(name: str, ref: Path, out: Path) -> dict[str, Path]:
    """The official files of ``name`` packed from the miniature root ``ref`` into ``out``; file name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def tar(file_name, members, mode="w:gz"):
        files[file_name] = make_tar(out / file_name, members, mode)

    def zip_(file_name, members):
        files[file_name] = make_zip(out / file_name, members)

    def copy(src: Path, file_name: str | None = None):
        files[file_name or src.name] = out / (file_name or src.name)
        files[file_name or src.name].write_bytes(src.read_bytes())

    if name == "caltech101":
        inner = make_tar(out / "inner.tar.gz", _members(ref / "caltech-101/101_ObjectCategories", "101_ObjectCategories"))
        zip_("caltech-101.zip", {"caltech-101/101_ObjectCategories.tar.gz": inner,
                                 "caltech-101/Annotations.tar": b"annotations"})
        inner.unlink()
        copy(ref / "caltech-101/split_zhou_Caltech101.json")
    elif name == "oxford_pets":
        tar("images.tar.gz", _members(ref / "oxford_pets/images", "images"))
        tar("annotations.tar.gz", {"annotations/list.txt": b"#Image CLASS-ID SPECIES BREED ID\n"})
        copy(ref / "oxford_pets/split_zhou_OxfordPets.json")
    elif name == "stanford_cars":
        tar("cars_train.tgz", _members(ref / "stanford_cars/cars_train", "cars_train"))
        tar("cars_test.tgz", _members(ref / "stanford_cars/cars_test", "cars_test"))
        tar("car_devkit.tgz", {"devkit/README.txt": b"devkit"})
        scipy.io.savemat(out / "cars_test_annos_withlabels.mat", {"annotations": np.zeros((1, 2))})
        files["cars_test_annos_withlabels.mat"] = out / "cars_test_annos_withlabels.mat"
        copy(ref / "stanford_cars/split_zhou_StanfordCars.json")
    elif name == "oxford_flowers":
        tar("102flowers.tgz", _members(ref / "oxford_flowers/jpg", "jpg"))
        split = json.loads((ref / "oxford_flowers/split_zhou_OxfordFlowers.json").read_text())
        rows = [row for part in split.values() for row in part]
        labels = np.ones(max(int(re.sub(r"\D", "", r[0])) for r in rows), dtype=np.uint8)
        for relpath, label, _ in rows:
            labels[int(re.sub(r"\D", "", relpath)) - 1] = label + 1
        scipy.io.savemat(out / "imagelabels.mat", {"labels": labels[None, :]})
        files["imagelabels.mat"] = out / "imagelabels.mat"
        (out / "cat_to_name.json").write_text(json.dumps({"1": "pink primrose", "2": "globe thistle"}))
        files["cat_to_name.json"] = out / "cat_to_name.json"
        copy(ref / "oxford_flowers/split_zhou_OxfordFlowers.json")
    elif name == "food101":
        tar("food-101.tar.gz", {**_members(ref / "food-101/images", "food-101/images"),
                                "food-101/meta/classes.txt": b"apple_pie\nbaby_back_ribs\n",
                                "food-101/README.txt": b"Food-101", "food-101/license_agreement.txt": b"license"})
        copy(ref / "food-101/split_zhou_Food101.json")
    elif name == "fgvc_aircraft":
        tar("fgvc-aircraft-2013b.tar.gz", {**_members(ref / "fgvc_aircraft", "fgvc-aircraft-2013b/data"),
                                           "fgvc-aircraft-2013b/README.html": b"readme"})
    elif name == "sun397":
        tar("SUN397.tar.gz", _members(ref / "sun397/SUN397", "SUN397"))
        zip_("Partitions.zip", {"Partitions/ClassName.txt": b"/a/abbey\n", "Partitions/Training_01.txt": b""})
        copy(ref / "sun397/split_zhou_SUN397.json")
    elif name == "dtd":
        tar("dtd-r1.0.1.tar.gz", {**_members(ref / "dtd/images", "dtd/images"), "dtd/labels/train1.txt": b"",
                                  "dtd/imdb/imdb.mat": b"imdb"})
        copy(ref / "dtd/split_zhou_DescribableTextures.json")
    elif name == "eurosat":
        zip_("EuroSAT.zip", _members(ref / "eurosat/2750", "2750"))
        copy(ref / "eurosat/split_zhou_EuroSAT.json")
    elif name == "ucf101":
        zip_("UCF-101-midframes.zip", _members(ref / "ucf101/UCF-101-midframes", "UCF-101-midframes"))
        copy(ref / "ucf101/split_zhou_UCF101.json")
    elif name == "imagenet":
        # one tar per class holding bare file names (n01440764_0.JPEG), as the real train tar does
        per_class = {f"{w}.tar": make_tar(out / f"{w}.tar", {p.name: p for p in sorted(
            (ref / "imagenet/images/train" / w).glob("*.JPEG"))}, mode="w") for w in WNIDS}
        tar("ILSVRC2012_img_train.tar", per_class, mode="w")
        for p in per_class.values():
            p.unlink()
        val = [(w, p) for w in WNIDS for p in sorted((ref / "imagenet/images/val" / w).glob("*.JPEG"))]
        val = [val[k] for k in VAL_ORDER]  # the flat val tar is not sorted by class
        tar("ILSVRC2012_img_val.tar", {f"ILSVRC2012_val_{k + 1:08d}.JPEG": p for k, (_, p) in enumerate(val)},
            mode="w")
        ids = {w: k + 1 for k, w in enumerate(WNIDS)}
        synsets = np.empty((len(WNIDS) + 1,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"),
                                                      ("gloss", "O"), ("num_children", "O")])
        for k, w in enumerate(WNIDS):
            synsets[k] = (ids[w], w, WNIDS[w], "", 0)
        synsets[len(WNIDS)] = (1001, "n00001740", "entity", "", 2)  # an inner node of the hierarchy
        scipy.io.savemat(out / "meta.mat", {"synsets": synsets})
        truth = "".join(f"{ids[w]}\n" for w, _ in val).encode()
        tar("ILSVRC2012_devkit_t12.tar.gz", {"ILSVRC2012_devkit_t12/data/meta.mat": out / "meta.mat",
                                             "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth})
        (out / "meta.mat").unlink()
        copy(ref / "imagenet/classnames.txt")
    elif name == "imagenetv2":
        tar("imagenetv2-matched-frequency.tar.gz",
            _members(ref / "imagenetv2/imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency-format-val"))
    elif name == "imagenet_sketch":
        zip_("ImageNet-Sketch.zip", _members(ref / "imagenet-sketch/images", "sketch"))
    elif name == "imagenet_a":
        tar("imagenet-a.tar", _members(ref / "imagenet-adversarial/imagenet-a", "imagenet-a"), mode="w")
    elif name == "imagenet_r":
        tar("imagenet-r.tar", _members(ref / "imagenet-rendition/imagenet-r", "imagenet-r"), mode="w")
    else:
        raise KeyError(name)
    if name in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        copy(ref / "imagenet/classnames.txt")
    return files
