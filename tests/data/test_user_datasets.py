"""Users' own data: an image folder (with or without train/val/test) and a CSV file."""

from __future__ import annotations

import math

import pytest
from miniature_datasets import tiny_image

from vlprompt.data.csv_dataset import read_csv_dataset
from vlprompt.data.folder import read_image_folder
from vlprompt.errors import ConfigError, DataError

COUNTS = {"barn_owl": 10, "robin": 5, "wren": 3}  # images per class


def flat_folder(root):
    for name, n in COUNTS.items():
        for i in range(n):
            tiny_image(root / name / f"{i}.jpg")
    (root / "robin" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    return root


def test_folder_with_given_splits(tmp_path):
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for name in ("cat", "dog"):
            for i in range(n):
                tiny_image(tmp_path / "pets" / split / name / f"{i}.jpg")
    tiny_image(tmp_path / "pets" / "test" / "dog" / "nested" / "extra.jpg")
    data = read_image_folder(tmp_path / "pets", template="a photo of my {}.")
    assert data.name == "pets" and data.classnames == ["cat", "dog"] and data.template == "a photo of my {}."
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [6, 2, 5]
    assert sorted(data.classnames[r.label] for r in data.test) == ["cat", "cat", "dog", "dog", "dog"]
    tiny_image(tmp_path / "pets" / "val" / "fox" / "0.jpg")
    with pytest.raises(DataError, match="fox has no counterpart"):
        read_image_folder(tmp_path / "pets")


def test_flat_folder_is_split_per_class_by_seed_and_fractions(tmp_path):
    root = flat_folder(tmp_path / "birds")
    data = read_image_folder(root, val_fraction=0.2, test_fraction=0.3, seed=4)
    assert data.classnames == sorted(COUNTS)
    for k, (name, n) in enumerate(sorted(COUNTS.items())):
        n_test, n_val = max(1, round(n * 0.3)), round(n * 0.2)
        sizes = [sum(r.label == k for r in data.split(s)) for s in ("train", "val", "test")]
        assert sizes == [n - n_test - n_val, n_val, n_test]
        paths = [r.path for s in ("train", "val", "test") for r in data.split(s) if r.label == k]
        assert sorted(paths) == sorted(str(root / name / f"{i}.jpg") for i in range(n))  # a partition
    again = read_image_folder(root, val_fraction=0.2, test_fraction=0.3, seed=4)
    assert again.test == data.test
    assert read_image_folder(root, val_fraction=0.2, test_fraction=0.3, seed=5).test != data.test
    with pytest.raises(ConfigError, match="val_fraction=0.5 and test_fraction=0.5"):
        read_image_folder(root, val_fraction=0.5, test_fraction=0.5)
    tiny_image(root / "kiwi" / "0.jpg")
    with pytest.raises(DataError, match="kiwi has 1 image"):
        read_image_folder(root)
    with pytest.raises(DataError, match="does not exist"):
        read_image_folder(tmp_path / "nothing")


def test_csv_with_split_column(tmp_path):
    lines = ["path,label,split", "a/1.jpg,zebra,train", "a/2.jpg,ant,train", f"{tmp_path}/b/3.jpg,ant,test",
             "a/4.jpg,zebra,val"]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    data = read_csv_dataset(tmp_path / "list.csv", root=tmp_path / "imgs")
    assert data.name == "list" and data.classnames == ["ant", "zebra"]
    assert [(r.path, r.label, r.classname) for r in data.train] == [
        (str(tmp_path / "imgs" / "a" / "1.jpg"), 1, "zebra"), (str(tmp_path / "imgs" / "a" / "2.jpg"), 0, "ant")]
    assert [r.path for r in data.test] == [str(tmp_path / "b" / "3.jpg")] and len(data.val) == 1
    assert read_csv_dataset(tmp_path / "list.csv").train[0].path == str(tmp_path / "a" / "1.jpg")
    (tmp_path / "bad.csv").write_text("path,label,split\na.jpg,ant,train\nb.jpg,ant,training\n")
    with pytest.raises(DataError, match="bad.csv line 3: split 'training'"):
        read_csv_dataset(tmp_path / "bad.csv")
    (tmp_path / "no_train.csv").write_text("path,label,split\na.jpg,ant,train\nb.jpg,bee,test\n")
    with pytest.raises(DataError, match="class 'bee' has no row with split 'train'"):
        read_csv_dataset(tmp_path / "no_train.csv")
    (tmp_path / "columns.csv").write_text("file,class\na.jpg,ant\n")
    with pytest.raises(DataError, match="lacks the column"):
        read_csv_dataset(tmp_path / "columns.csv")


def test_csv_without_split_column_splits_like_the_folder(tmp_path):
    root = flat_folder(tmp_path / "birds")
    rows = [f"{name}/{i}.jpg,{name}" for name, n in COUNTS.items() for i in range(n)]
    (root / "all.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    from_csv = read_csv_dataset(root / "all.csv", test_fraction=0.3, seed=2)
    from_folder = read_image_folder(root, test_fraction=0.3, seed=2)
    assert from_csv.classnames == from_folder.classnames
    for split in ("train", "val", "test"):
        assert sorted(from_csv.split(split), key=lambda r: r.path) == from_folder.split(split)
    assert len(from_csv.test) == sum(math.floor(n * 0.3 + 0.5) for n in COUNTS.values())
