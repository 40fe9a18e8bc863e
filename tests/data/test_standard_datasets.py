"""Miniature copies of the 11 datasets and the ImageNet variants in the reference layout, read back;
few-shot sampling against an independent replay of Dassl's sampler; data verify."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlprompt.data.datasets import DATASETS, read_dataset
from vlprompt.data.sampling import few_shot, imbalance_counts, imbalanced, subsample_classes
from vlprompt.data.templates import templates_for
from vlprompt.data.verify import format_report, verify_datasets
from vlprompt.errors import ConfigError, DataError

SPLIT_JSON = {  # name: (folder, image dir, split file, class names as stored in the JSON)
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", ["face", "leopard", "accordion"]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json", ["abyssinian", "beagle"]),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json", ["2012 Tesla Model S Sedan", "2007 BMW X5 SUV"]),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", ["pink primrose", "globe thistle"]),
    "food101": ("food-101", "images", "split_zhou_Food101.json", ["apple_pie", "baby_back_ribs"]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json", ["abbey", "outdoor airplane cabin"]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json", ["banded", "blotchy"]),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json", ["Annual Crop Land", "Forest", "Sea or Lake"]),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", ["Apply_Eye_Makeup", "Archery"]),
}
SIZES = {"train": 5, "val": 2, "test": 3}  # images per class
WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark", "n01491361": "tiger shark"}


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (len(path.name) * 20 % 255, 90, 160)).save(path)


def build_split_json(root: Path, name: str) -> None:
    folder, image_dir, split_file, classes = SPLIT_JSON[name]
    base = root / folder / image_dir
    content = {}
    for split, n in SIZES.items():
        rows = []
        for label, cname in enumerate(classes):
            for i in range(n):
                rel = f"{cname.replace(' ', '_')}/{split}_{i}.jpg"
                image(base / rel)
                rows.append([rel, label, cname])
        content[split] = rows
    (root / folder / split_file).write_text(json.dumps(content))


def build_aircraft(root: Path) -> None:
    d = root / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "Cessna 172"]
    (d / "images").mkdir(parents=True)
    (d / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, n in SIZES.items():
        lines = []
        for v, variant in enumerate(variants):
            for i in range(n):
                image_id = f"{split[0]}{v}{i:04d}"
                image(d / "images" / f"{image_id}.jpg")
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
                image(root / "imagenet" / "images" / split / w / f"{w}_{i}.JPEG")
    classnames_file(root / "imagenetv2")
    for k in range(len(WNIDS)):
        for i in range(2):
            image(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(k) / f"{i}.jpeg")
    classnames_file(root / "imagenet-sketch")
    for w in WNIDS:
        image(root / "imagenet-sketch" / "images" / w / "sketch_0.JPEG")
    for folder, sub, present in (("imagenet-adversarial", "imagenet-a", ["n01443537", "n01491361"]),
                                 ("imagenet-rendition", "imagenet-r", ["n01440764", "n01484850", "n01491361"])):
        classnames_file(root / folder)
        (root / folder / sub).mkdir(parents=True)
        (root / folder / sub / "README.txt").write_text("not a class")
        for w in present:
            for i in range(2):
                image(root / folder / sub / w / f"{i}.jpg")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    for name in SPLIT_JSON:
        build_split_json(root, name)
    build_aircraft(root)
    build_imagenets(root)
    return root


def test_registry_has_the_eleven_datasets_and_four_variants():
    assert len(DATASETS) == 15
    with pytest.raises(ConfigError, match="oxford_pets"):
        read_dataset("oxford_pet", "/nowhere")


@pytest.mark.parametrize("name", sorted(SPLIT_JSON))
def test_split_json_datasets(root, name):
    folder, image_dir, _, classes = SPLIT_JSON[name]
    data = read_dataset(name, root)
    assert data.classnames == classes
    for split, n in SIZES.items():
        assert len(data.split(split)) == n * len(classes)
    first = data.train[0]
    assert Path(first.path) == root / folder / image_dir / f"{classes[0].replace(' ', '_')}/train_0.jpg"
    assert Path(first.path).is_file() and first.label == 0
    assert data.template == templates_for(name)[0]


def test_aircraft_text_splits(root):
    data = read_dataset("fgvc_aircraft", root)
    assert data.classnames == ["707-320", "A300B4", "Cessna 172"]
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [15, 6, 9]
    assert data.test[-1].classname == "Cessna 172" and data.test[-1].label == 2
    assert data.template == "a photo of a {}, a type of aircraft."


def test_imagenet_and_its_variants(root):
    imagenet = read_dataset("imagenet", root)
    assert imagenet.classnames == ["tench", "goldfish", "great white shark", "tiger shark"]
    assert len(imagenet.train) == 16 and imagenet.val == imagenet.test and len(imagenet.test) == 8
    v2 = read_dataset("imagenetv2", root)
    assert v2.classnames == imagenet.classnames and len(v2.test) == 8
    assert {r.label for r in v2.test if "/2/" in r.path} == {2}
    sketch = read_dataset("imagenet_sketch", root)
    assert sketch.classnames == imagenet.classnames and len(sketch.test) == 4
    a = read_dataset("imagenet_a", root)
    assert a.classnames == ["goldfish", "tiger shark"] and [r.label for r in a.test] == [0, 0, 1, 1]
    r = read_dataset("imagenet_r", root)
    assert r.classnames == ["tench", "great white shark", "tiger shark"] and len(r.test) == 6


def dassl_few_shot(records, shots, seed):
    """Independent replay of the reference: global random seeded, classes in first-appearance order,
    random.sample per class (all images when fewer), train first then val with min(shots, 4)."""
    random.seed(seed)
    out = []
    for split, k in (("train", shots), ("val", min(shots, 4))):
        tracker = {}
        for item in records[split]:
            tracker.setdefault(item.label, []).append(item)
        chosen = []
        for items in tracker.values():
            chosen.extend(random.sample(items, k) if len(items) >= k else items)
        out.append([c.path for c in chosen])
    return out


@pytest.mark.parametrize("name,shots,seed", [("oxford_pets", 2, 1), ("eurosat", 4, 2), ("fgvc_aircraft", 1, 3),
                                             ("imagenet", 3, 1), ("dtd", 16, 2)])
def test_few_shot_selection_equals_the_reference_procedure(root, tmp_path, name, shots, seed):
    data = read_dataset(name, root)
    sampled = few_shot(data, shots, seed, cache_dir=tmp_path)
    expected_train, expected_val = dassl_few_shot({"train": data.train, "val": data.val}, shots, seed)
    assert [r.path for r in sampled.train] == expected_train
    assert [r.path for r in sampled.val] == expected_val
    assert sampled.test == data.test
    (saved,) = tmp_path.glob(f"{name}_{shots}shot_seed{seed}_*.json")
    assert json.loads(saved.read_text())["train"] == expected_train
    again = few_shot(data, shots, seed, cache_dir=tmp_path)
    assert [r.path for r in again.train] == expected_train and len(list(tmp_path.glob("*.json"))) == 1


def test_base_new_split_relabels_each_half(root):
    data = read_dataset("eurosat", root)  # 3 classes: base = first ceil(3/2) = 2
    base, new = subsample_classes(data, "base"), subsample_classes(data, "new")
    assert base.classnames == ["Annual Crop Land", "Forest"] and new.classnames == ["Sea or Lake"]
    assert {r.label for r in base.test} == {0, 1} and {r.label for r in new.test} == {0}
    assert all(r.classname == "Sea or Lake" for r in new.train + new.val + new.test)


def test_imbalanced_profile_and_counts(root):
    assert imbalance_counts(5, 1.0) == [16] * 5
    assert imbalance_counts(5, 1 / 16) == [16, 8, 4, 2, 1]
    assert imbalance_counts(3, 0.25) == [16, 8, 4]
    data = read_dataset("caltech101", root)  # 3 classes x 5 training images
    sub, counts = imbalanced(data, 0.25, seed=1, n_max=4, order="label")
    assert counts == {"face": 4, "leopard": 2, "accordion": 1}
    assert [sum(r.label == k for r in sub.train) for k in range(3)] == [4, 2, 1]
    assert sub.test == data.test
    with pytest.raises(ConfigError, match="ratio"):
        imbalance_counts(3, 0.0)


def test_verify_names_a_removed_image_and_a_removed_split_file(root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root / "oxford_pets", copy / "oxford_pets")
    shutil.copytree(root / "dtd", copy / "dtd")
    victim = copy / "oxford_pets" / "images" / "beagle" / "test_1.jpg"
    victim.unlink()
    (copy / "dtd" / "split_zhou_DescribableTextures.json").unlink()
    reports = {r.name: r for r in verify_datasets(copy, ["oxford_pets", "dtd", "food101"])}
    assert reports["oxford_pets"].missing_images == [str(victim)]
    assert not reports["dtd"].ok and "split_zhou_DescribableTextures.json" in reports["dtd"].missing_files[0][0]
    text = format_report(list(reports.values()))
    assert str(victim) in text and "DATASETS.md" in text and "food-101" in text
    cli = subprocess.run([sys.executable, "-m", "vlprompt.cli.main", "data", "verify", "--root", str(copy),
                          "--dataset", "oxford_pets"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1 and str(victim) in cli.stdout
    with pytest.raises(DataError, match="split_zhou_DescribableTextures.json"):
        read_dataset("dtd", copy)
