"""Builders of a miniature copy of the 11 benchmark datasets and the four ImageNet variants in the reference layout.

Each dataset gets a few tiny real images per class, at the relative paths the real split files use
(Caltech's raw folder ``Faces`` named "face", Pets' flat ``Abyssinian_1.jpg``, SUN397's
``a/abbey/...``, Cars' ``cars_train/...``), and its split file in the real format.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

# name: (folder, image dir, split file, [(class name as stored, relative path pattern)])
SPLIT_JSON = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                   [("face", "Faces/image_{i:04d}.jpg"), ("leopard", "Leopards/image_{i:04d}.jpg"),
                    ("accordion", "accordion/image_{i:04d}.jpg")]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json",
                    [("abyssinian", "Abyssinian_{i}.jpg"), ("american_bulldog", "american_bulldog_{i}.jpg")]),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json",
                      [("2012 Tesla Model S Sedan", "cars_{part}/{i:05d}.jpg"),
                       ("2007 BMW X5 SUV", "cars_{part}/{j:05d}.jpg")]),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                       [("pink primrose", "image_{i:05d}.jpg"), ("globe thistle", "image_{j:05d}.jpg")]),
    "food101": ("food-101", "images", "split_zhou_Food101.json",
                [("apple_pie", "apple_pie/{i}00.jpg"), ("baby_back_ribs", "baby_back_ribs/{i}01.jpg")]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json",
               [("abbey", "a/abbey/sun_{i:04d}.jpg"), ("shop bakery", "b/bakery/shop/sun_{i:04d}.jpg")]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json",
            [("banded", "banded/banded_{i:04d}.jpg"), ("blotchy", "blotchy/blotchy_{i:04d}.jpg")]),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json",
                [("Annual Crop Land", "AnnualCrop/AnnualCrop_{i}.jpg"), ("Forest", "Forest/Forest_{i}.jpg"),
                 ("Sea or Lake", "SeaLake/SeaLake_{i}.jpg")]),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
               [("Apply_Eye_Makeup", "Apply_Eye_Makeup/v_ApplyEyeMakeup_g{i:02d}_c01.jpg"),
                ("Archery", "Archery/v_Archery_g{i:02d}_c01.jpg")]),
}
SIZES = {"train": 5, "val": 2, "test": 3}  # images per class and split
AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172"]
SPLIT_DIGIT = {"train": 1, "val": 2, "test": 3}  # first digit of a miniature aircraft image id
WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark", "n01491361": "tiger shark"}
IMAGENET_A_WNIDS = ["n01443537", "n01491361"]
IMAGENET_R_WNIDS = ["n01440764", "n01484850", "n01491361"]


def tiny_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (len(path.name) * 20 % 255, 90, 160)).save(path, format="JPEG")


def relative_path(pattern: str, split: str, label: int, index: int) -> str:
    """A unique path per (split, class, image); Cars keeps train and val in cars_train like the real file."""
    serial = {"train": 1, "val": 101, "test": 201}[split] + index  # from 1, as image_00001.jpg
    part = "test" if split == "test" else "train"
    return pattern.format(i=serial + 1000 * label, j=serial + 1000 * label, part=part)


def build_split_json(root: Path, name: str) -> None:
    folder, image_dir, split_file, classes = SPLIT_JSON[name]
    content = {}
    for split, n in SIZES.items():
        rows = []
        for label, (cname, pattern) in enumerate(classes):
            for i in range(n):
                rel = relative_path(pattern, split, label, i)
                tiny_image(root / folder / image_dir / rel)
                rows.append([rel, label, cname])
        content[split] = rows
    (root / folder / split_file).write_text(json.dumps(content, indent=4))


def build_aircraft(root: Path) -> None:
    d = root / "fgvc_aircraft"
    (d / "images").mkdir(parents=True)
    (d / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    for split, n in SIZES.items():
        lines = []
        for v, variant in enumerate(AIRCRAFT_VARIANTS):
            for i in range(n):
                image_id = f"{SPLIT_DIGIT[split]}{v}{i:05d}"
                tiny_image(d / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}")
        (d / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def classnames_file(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in WNIDS.items()))


def build_imagenets(root: Path) -> None:
    classnames_file(root / "imagenet")
    for split, n in (("train", 4), ("val", 2)):
        for w in WNIDS:
            for i in range(n):
                tiny_image(root / "imagenet" / "images" / split / w / f"{w}_{i}.JPEG")
    (root / "imagenet" / "images" / "train" / "n01440764" / ".DS_Store").write_text("hidden, not an image")
    classnames_file(root / "imagenetv2")
    for k in range(len(WNIDS)):
        for i in range(2):
            tiny_image(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(k) / f"{i}.jpeg")
    classnames_file(root / "imagenet-sketch")
    for w in WNIDS:
        tiny_image(root / "imagenet-sketch" / "images" / w / "sketch_0.JPEG")
    for folder, sub, present in (("imagenet-adversarial", "imagenet-a", IMAGENET_A_WNIDS),
                                 ("imagenet-rendition", "imagenet-r", IMAGENET_R_WNIDS)):
        classnames_file(root / folder)
        (root / folder / sub).mkdir(parents=True)
        (root / folder / sub / "README.txt").write_text("not a class")
        for w in present:
            for i in range(2):
                tiny_image(root / folder / sub / w / f"{i}.jpg")


def build_all(root: Path) -> Path:
    for name in SPLIT_JSON:
        build_split_json(root, name)
    build_aircraft(root)
    build_imagenets(root)
    return root
