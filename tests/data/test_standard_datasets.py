"""Each reader on the miniature copy of its dataset in the reference layout; errors; data verify."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from miniature_datasets import (
    AIRCRAFT_VARIANTS,
    IMAGENET_A_WNIDS,
    IMAGENET_R_WNIDS,
    SIZES,
    SPLIT_JSON,
    WNIDS,
    relative_path,
)

from vlprompt.cli import data as data_cli
from vlprompt.cli.main import main
from vlprompt.data.datasets import DATASETS, read_dataset
from vlprompt.data.datasets.class_names import caltech_name, eurosat_name, pets_name, sun397_name
from vlprompt.data.templates import templates_for
from vlprompt.data.verify import format_report, verify_datasets
from vlprompt.errors import ConfigError, DataError

STANDARD = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
            "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


def test_registry_holds_the_eleven_datasets_and_four_variants():
    assert sorted(DATASETS) == sorted(STANDARD)
    with pytest.raises(ConfigError, match="'oxford_pets'"):
        read_dataset("oxford_pet", "/nowhere")


@pytest.mark.parametrize("name", sorted(SPLIT_JSON))
def test_split_json_dataset(datasets_root, name):
    folder, image_dir, _, classes = SPLIT_JSON[name]
    data = read_dataset(name, datasets_root)
    assert data.name == name and data.classnames == [cname for cname, _ in classes]
    for split, n in SIZES.items():
        records = data.split(split)
        assert len(records) == n * len(classes)
        assert [r.label for r in records] == [k for k in range(len(classes)) for _ in range(n)]
    # paths in the JSON are relative to the image folder (Cars: to the dataset folder itself)
    last = data.test[-1]
    expected = datasets_root / folder / image_dir / relative_path(classes[-1][1], "test", len(classes) - 1, 2)
    assert Path(last.path) == expected and expected.is_file()
    assert last.classname == classes[-1][0]
    assert data.template == templates_for(name)[0]


def test_aircraft_reads_the_official_text_splits(datasets_root):
    data = read_dataset("fgvc_aircraft", datasets_root)
    assert data.classnames == AIRCRAFT_VARIANTS
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [15, 6, 9]
    last = data.test[-1]
    assert (last.classname, last.label) == ("Cessna 172", 2)
    assert Path(last.path) == datasets_root / "fgvc_aircraft" / "images" / "3200002.jpg"
    assert data.template == "a photo of a {}, a type of aircraft."


def test_imagenet_labels_follow_sorted_wnid_folders_and_val_is_test(datasets_root):
    data = read_dataset("imagenet", datasets_root)
    assert data.classnames == [WNIDS[w] for w in sorted(WNIDS)]
    assert len(data.train) == 16  # the hidden .DS_Store is not an image
    assert data.val == data.test and len(data.test) == 8
    assert all(Path(r.path).parent.name == sorted(WNIDS)[r.label] for r in data.train + data.test)


def test_imagenet_variants_and_their_label_spaces(datasets_root):
    imagenet_names = [WNIDS[w] for w in sorted(WNIDS)]
    v2 = read_dataset("imagenetv2", datasets_root)
    assert v2.classnames == list(WNIDS.values()) and len(v2.test) == 8 and not v2.train
    assert all(Path(r.path).parent.name == str(r.label) for r in v2.test)
    sketch = read_dataset("imagenet_sketch", datasets_root)
    assert sketch.classnames == imagenet_names and len(sketch.test) == 4
    a = read_dataset("imagenet_a", datasets_root)  # README.txt is skipped; 2 classes present
    assert a.classnames == [WNIDS[w] for w in IMAGENET_A_WNIDS] and [r.label for r in a.test] == [0, 0, 1, 1]
    r = read_dataset("imagenet_r", datasets_root)
    assert r.classnames == [WNIDS[w] for w in IMAGENET_R_WNIDS] and len(r.test) == 6
    assert all(d.template == "a photo of a {}." for d in (v2, sketch, a, r))


def test_missing_and_damaged_files_give_errors_that_name_them(datasets_root, tmp_path):
    with pytest.raises(DataError, match=r"eurosat.*split_zhou_EuroSAT.json"):
        read_dataset("eurosat", tmp_path)
    shutil.copytree(datasets_root / "dtd", tmp_path / "dtd")
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="split_zhou_DescribableTextures.json is not in the split_zhou format"):
        read_dataset("dtd", tmp_path)
    shutil.copytree(datasets_root / "imagenet-rendition", tmp_path / "imagenet-rendition")
    (tmp_path / "imagenet-rendition" / "imagenet-r" / "n99999999").mkdir()
    with pytest.raises(DataError, match="n99999999 is not listed in .*classnames.txt"):
        read_dataset("imagenet_r", tmp_path)
    shutil.copytree(datasets_root / "imagenetv2", tmp_path / "imagenetv2")
    shutil.rmtree(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "3")
    with pytest.raises(DataError, match=r"class folder .*format-val/3 is missing"):
        read_dataset("imagenetv2", tmp_path)
    with pytest.raises(DataError, match=r"fgvc_aircraft/variants.txt is missing"):
        read_dataset("fgvc_aircraft", tmp_path)


def test_verify_names_a_removed_image_and_a_removed_split_file(datasets_root, tmp_path):
    copy = tmp_path / "copy"
    for folder in ("oxford_pets", "dtd"):
        shutil.copytree(datasets_root / folder, copy / folder)
    victim = copy / "oxford_pets" / "images" / "american_bulldog_1201.jpg"
    victim.unlink()
    (copy / "dtd" / "split_zhou_DescribableTextures.json").unlink()
    (copy / "oxford_pets" / "images" / "Abyssinian_2.jpg").write_bytes(b"not a jpeg")
    reports = {r.name: r for r in verify_datasets(copy, ["oxford_pets", "dtd", "food101"], decode=True)}
    assert reports["oxford_pets"].missing_images == [str(victim)]
    assert reports["oxford_pets"].unreadable_images == [str(copy / "oxford_pets" / "images" / "Abyssinian_2.jpg")]
    assert reports["oxford_pets"].images == 2 * sum(SIZES.values())
    assert [p for p, _ in reports["dtd"].missing_files] == [str(copy / "dtd" / "split_zhou_DescribableTextures.json")]
    assert not reports["food101"].ok and not any(r.ok for r in reports.values())
    text = format_report(list(reports.values()))
    assert str(victim) in text and "DATASETS.md" in text and str(copy / "food-101") in text
    assert verify_datasets(datasets_root, ["oxford_pets", "imagenet_a"])[0].ok


def test_data_verify_command(datasets_root, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["data", "verify", "--root", str(datasets_root), "--dataset", "caltech101"])
    assert args.func(args) == 0
    assert "caltech101: OK (30 images listed)" in capsys.readouterr().out
    shutil.copytree(datasets_root / "ucf101", tmp_path / "ucf101")
    victim = tmp_path / "ucf101" / "UCF-101-midframes" / "Archery" / "v_Archery_g1001_c01.jpg"
    victim.unlink()
    assert main(["data", "verify", "--root", str(tmp_path), "--dataset", "ucf101"]) == 1
    assert f"missing image {victim}" in capsys.readouterr().out
    assert main(["data", "verify", "--root", str(tmp_path), "--dataset", "ucf"]) != 0
    assert "'ucf101'" in capsys.readouterr().err


def test_reference_class_name_processing():
    assert caltech_name("Faces/image_0001.jpg") == "face" and caltech_name("airplanes/image_0001.jpg") == "airplane"
    assert caltech_name("BACKGROUND_Google/image_0001.jpg") is None and caltech_name("ant/image_1.jpg") == "ant"
    assert pets_name("american_pit_bull_terrier_103.jpg") == "american_pit_bull_terrier"
    assert pets_name("Bengal_2.jpg") == "bengal"
    assert sun397_name("b/bakery/shop/sun_x.jpg") == "shop bakery" and sun397_name("a/abbey/sun_x.jpg") == "abbey"
    assert eurosat_name("HerbaceousVegetation/HerbaceousVegetation_9.jpg") == "Herbaceous Vegetation Land"
    assert eurosat_name("River/River_1.jpg") == "River" and eurosat_name("Glacier/Glacier_1.jpg") is None


def test_verify_passes_the_complete_miniature_and_flags_foreign_class_names(datasets_root, tmp_path):
    reports = verify_datasets(datasets_root)
    assert [r.name for r in reports] == sorted(STANDARD) and all(r.ok for r in reports), format_report(reports)
    shutil.copytree(datasets_root / "eurosat", tmp_path / "eurosat")
    split_file = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    content = json.loads(split_file.read_text())
    for rows in content.values():
        for row in rows:
            row[2] = "Woodland" if row[2] == "Forest" else row[2]
    split_file.write_text(json.dumps(content))
    (report,) = verify_datasets(tmp_path, ["eurosat"])
    (line,) = report.wrong_names
    assert "'Woodland'" in line and "'Forest'" in line and "Forest/Forest_" in line
    assert "does not belong to these images" in format_report([report])


def test_aircraft_split_line_with_an_unknown_variant(datasets_root, tmp_path):
    shutil.copytree(datasets_root / "fgvc_aircraft", tmp_path / "fgvc_aircraft")
    with (tmp_path / "fgvc_aircraft" / "images_variant_val.txt").open("a") as f:
        f.write("2999999 Boeing 797\n")
    with pytest.raises(DataError, match=r"images_variant_val.txt line 7: variant 'Boeing 797'"):
        read_dataset("fgvc_aircraft", tmp_path)
