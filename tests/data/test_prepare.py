"""``data prepare`` from tiny copies of each dataset's official files: the layout the readers expect, checksums,
safe and atomic unpacking, resumption, and never touching a user's folder."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from miniature_datasets import WNIDS
from official_archives import VAL_ORDER, md5, pack

from vlprompt.cli.main import main
from vlprompt.data import prepare as prepare_module
from vlprompt.data.datasets import DATASETS, dataset_folder, read_dataset
from vlprompt.data.prepare import STAGING, prepare_dataset
from vlprompt.data.sources import SOURCES
from vlprompt.data.verify import format_report, verify_datasets
from vlprompt.errors import DataError


def publish(monkeypatch, name: str, files: dict[str, Path], url_of=None) -> None:
    """Give the tiny files the 'published' checksums (the real ones belong to the real files), and, with
    ``url_of``, a local address."""
    for key, source in SOURCES[name].items():
        container = source.container
        if container is not None and container.name in files:
            container = dataclasses.replace(container, checksum=md5(files[container.name]),
                                            url=url_of(container.name) if url_of else container.url)
        changes = {"container": container}
        if source.name in files:
            if source.checksum is not None:
                changes["checksum"] = md5(files[source.name])
            if url_of:
                changes["url"] = url_of(source.name)
        monkeypatch.setitem(SOURCES[name], key, dataclasses.replace(source, **changes))


def relative_records(name: str, root: Path) -> dict[str, list[tuple[str, int, str]]]:
    data = read_dataset(name, root)
    return {s: [(Path(r.path).relative_to(root).as_posix(), r.label, r.classname) for r in data.split(s)]
            for s in ("train", "val", "test")}


@pytest.mark.parametrize("name", sorted(set(DATASETS.names()) - {"imagenet"}))
def test_prepare_lays_out_each_dataset_as_its_reader_reads_the_reference_layout(name, datasets_root, tmp_path,
                                                                                monkeypatch):
    files = pack(name, datasets_root, tmp_path / "downloads")
    publish(monkeypatch, name, files)
    root = tmp_path / "data"
    assert prepare_dataset(name, root, tmp_path / "downloads") == f"{name}: prepared in {root / dataset_folder(name)}"
    assert relative_records(name, root) == relative_records(name, datasets_root)
    assert verify_datasets(root, [name])[0].ok
    assert not (root / STAGING).exists() and sorted(os.listdir(root)) == [dataset_folder(name)]


def test_the_prepared_folders_match_coops_listing(datasets_root, tmp_path, monkeypatch):
    """The extra files DATASETS.md shows beside the images: Food-101's meta/, DTD's labels/, Pets' annotations/."""
    root = tmp_path / "data"
    for name in ("food101", "dtd", "oxford_pets", "oxford_flowers", "stanford_cars", "sun397"):
        files = pack(name, datasets_root, tmp_path / name)
        publish(monkeypatch, name, files)
        prepare_dataset(name, root, tmp_path / name)
    assert sorted(os.listdir(root / "food-101")) == ["README.txt", "images", "license_agreement.txt", "meta",
                                                     "split_zhou_Food101.json"]
    assert sorted(os.listdir(root / "dtd")) == ["images", "imdb", "labels", "split_zhou_DescribableTextures.json"]
    assert sorted(os.listdir(root / "oxford_pets")) == ["annotations", "images", "split_zhou_OxfordPets.json"]
    assert sorted(os.listdir(root / "oxford_flowers")) == ["cat_to_name.json", "imagelabels.mat", "jpg",
                                                           "split_zhou_OxfordFlowers.json"]
    assert sorted(os.listdir(root / "stanford_cars")) == ["cars_test", "cars_test_annos_withlabels.mat", "cars_train",
                                                          "devkit", "split_zhou_StanfordCars.json"]
    assert sorted(os.listdir(root / "sun397")) == ["ClassName.txt", "SUN397", "Training_01.txt", "split_zhou_SUN397.json"]


def test_imagenet_train_tar_of_class_tars_and_flat_val_sorted_by_the_devkit(datasets_root, tmp_path, monkeypatch):
    files = pack("imagenet", datasets_root, tmp_path / "downloads")
    publish(monkeypatch, "imagenet", files)
    root = tmp_path / "data"
    prepare_dataset("imagenet", root, tmp_path / "downloads")
    images = root / "imagenet" / "images"
    for w in WNIDS:
        assert sorted(os.listdir(images / "train" / w)) == [f"{w}_{i}.JPEG" for i in range(4)]
    reference_val = [w for w in WNIDS for _ in range(2)]  # the miniature's val images, class by class
    for k, index in enumerate(VAL_ORDER):
        assert (images / "val" / reference_val[index] / f"ILSVRC2012_val_{k + 1:08d}.JPEG").is_file()
    data, reference = read_dataset("imagenet", root), read_dataset("imagenet", datasets_root)
    assert data.classnames == reference.classnames == list(WNIDS.values())
    assert sorted(r.label for r in data.test) == sorted(r.label for r in reference.test)
    assert verify_datasets(root, ["imagenet"])[0].ok


def test_the_variants_take_classnames_txt_from_the_prepared_imagenet(datasets_root, tmp_path, monkeypatch):
    files = pack("imagenet_a", datasets_root, tmp_path / "downloads")
    (tmp_path / "downloads" / "classnames.txt").unlink()
    publish(monkeypatch, "imagenet_a", files)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"classnames.txt: get it from CoOp's DATASETS.md"):
        prepare_dataset("imagenet_a", root, tmp_path / "downloads")
    assert not root.exists() or not any(root.iterdir())
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_bytes((datasets_root / "imagenet/classnames.txt").read_bytes())
    prepare_dataset("imagenet_a", root, tmp_path / "downloads")
    assert relative_records("imagenet_a", root) == relative_records("imagenet_a", datasets_root)


def test_missing_files_are_all_named_with_where_to_get_them_before_anything_is_written(tmp_path):
    (tmp_path / "downloads").mkdir()
    with pytest.raises(DataError) as caught:
        prepare_dataset("oxford_pets", tmp_path / "data", tmp_path / "downloads")
    text = str(caught.value)
    for name in ("images.tar.gz", "annotations.tar.gz", "split_zhou_OxfordPets.json"):
        assert f"  {name}: get it from" in text
    assert "then run: vlprompt data prepare oxford_pets --root" in text
    assert not (tmp_path / "data").exists()
    with pytest.raises(DataError, match="give --from DIR"):
        prepare_dataset("dtd", tmp_path / "data")


def test_a_file_that_does_not_match_its_published_checksum_is_refused(datasets_root, tmp_path):
    """The tiny images.tar.gz is not the real one: torchvision's published md5 refuses it."""
    pack("oxford_pets", datasets_root, tmp_path / "downloads")
    with pytest.raises(DataError, match=r"images.tar.gz has md5 [0-9a-f]{32}, expected 5c4f3ee8e5d25df40f4fd59a7f44e54c "
                                        r"\(checksum from torchvision 0.29.1, torchvision/datasets/oxford_iiit_pet.py\)"):
        prepare_dataset("oxford_pets", tmp_path / "data", tmp_path / "downloads")
    assert not (tmp_path / "data" / "oxford_pets").exists()


def test_a_split_file_that_is_a_web_page_is_refused(datasets_root, tmp_path, monkeypatch):
    files = pack("dtd", datasets_root, tmp_path / "downloads")
    publish(monkeypatch, "dtd", files)
    files["split_zhou_DescribableTextures.json"].write_text("<html>Google Drive - virus scan warning</html>")
    with pytest.raises(DataError, match="is not JSON"):
        prepare_dataset("dtd", tmp_path / "data", tmp_path / "downloads")
    assert not (tmp_path / "data" / "dtd").exists()


def test_flowers_split_labels_are_checked_against_imagelabels_mat(datasets_root, tmp_path, monkeypatch):
    import numpy as np
    import scipy.io

    files = pack("oxford_flowers", datasets_root, tmp_path / "downloads")
    labels = scipy.io.loadmat(files["imagelabels.mat"])["labels"]
    labels[0, 1000] = 2 if labels[0, 1000] == 1 else 1  # image_01001.jpg, a listed image of class 0... or 1
    scipy.io.savemat(files["imagelabels.mat"], {"labels": np.asarray(labels)})
    publish(monkeypatch, "oxford_flowers", files)
    with pytest.raises(DataError, match="image_01001.jpg label 1 .* the two files do not belong together"):
        prepare_dataset("oxford_flowers", tmp_path / "data", tmp_path / "downloads")


@pytest.mark.parametrize("member", ["../outside.txt", "/tmp/prepare-absolute.txt", "link"])
def test_archive_members_that_leave_the_target_are_refused(member, datasets_root, tmp_path, monkeypatch):
    files = pack("imagenet_r", datasets_root, tmp_path / "downloads")
    path = files["imagenet-r.tar"]
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "../../../../outside.txt"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    publish(monkeypatch, "imagenet_r", files)
    with pytest.raises(DataError, match="is refused"):
        prepare_dataset("imagenet_r", tmp_path / "data", tmp_path / "downloads")
    assert not (tmp_path / "outside.txt").exists() and not Path("/tmp/prepare-absolute.txt").exists()
    assert not (tmp_path / "data" / "imagenet-rendition").exists()


@pytest.mark.parametrize("member", ["../outside.txt", "/abs.txt", "symlink"])
def test_zip_members_that_leave_the_target_are_refused(member, datasets_root, tmp_path, monkeypatch):
    files = pack("eurosat", datasets_root, tmp_path / "downloads")
    with zipfile.ZipFile(files["EuroSAT.zip"], "a") as zf:
        if member == "symlink":
            info = zipfile.ZipInfo("2750/link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "../../outside.txt")
        else:
            zf.writestr(member, b"evil")
    publish(monkeypatch, "eurosat", files)
    with pytest.raises(DataError, match="is refused"):
        prepare_dataset("eurosat", tmp_path / "data", tmp_path / "downloads")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "data" / "eurosat").exists()


def test_an_interrupted_preparation_resumes_with_the_archives_not_yet_unpacked(datasets_root, tmp_path, monkeypatch):
    files = pack("oxford_pets", datasets_root, tmp_path / "downloads")
    good = files["annotations.tar.gz"].read_bytes()
    files["annotations.tar.gz"].write_bytes(good[: len(good) // 2])  # a truncated archive
    publish(monkeypatch, "oxford_pets", files)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="annotations.tar.gz cannot be read to the end"):
        prepare_dataset("oxford_pets", root, tmp_path / "downloads")
    assert not (root / "oxford_pets").exists()
    assert sorted(os.listdir(root / STAGING / "oxford_pets")) == ["images.tar.gz.d"]  # the complete one is kept
    files["annotations.tar.gz"].write_bytes(good)
    publish(monkeypatch, "oxford_pets", files)
    unpacked, hashed = [], []
    real_unpack, real_check = prepare_module.unpack, prepare_module.checksum_problem
    monkeypatch.setattr(prepare_module, "unpack", lambda archive, dest: (unpacked.append(archive.name),
                                                                         real_unpack(archive, dest)))
    monkeypatch.setattr(prepare_module, "checksum_problem", lambda path, checksum: (hashed.append(path.name),
                                                                                    real_check(path, checksum))[1])
    prepare_dataset("oxford_pets", root, tmp_path / "downloads")
    assert unpacked == ["annotations.tar.gz"] and hashed == ["annotations.tar.gz", "split_zhou_OxfordPets.json"]
    assert relative_records("oxford_pets", root) == relative_records("oxford_pets", datasets_root)
    assert not (root / STAGING).exists()


def test_a_users_folder_is_never_replaced_and_only_missing_single_files_are_added(datasets_root, tmp_path,
                                                                                   monkeypatch):
    files = pack("dtd", datasets_root, tmp_path / "downloads")
    publish(monkeypatch, "dtd", files)
    root = tmp_path / "data"
    (root / "dtd").mkdir(parents=True)
    (root / "dtd" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="prepare never changes a folder it did not create"):
        prepare_dataset("dtd", root, tmp_path / "downloads")
    assert os.listdir(root / "dtd") == ["notes.txt"] and (root / "dtd" / "notes.txt").read_text() == "mine"
    prepare_dataset("dtd", tmp_path / "other", tmp_path / "downloads")
    (tmp_path / "other" / "dtd" / "split_zhou_DescribableTextures.json").unlink()  # a folder laid out by hand
    assert prepare_dataset("dtd", tmp_path / "other", tmp_path / "downloads") == (
        f"dtd: added split_zhou_DescribableTextures.json to {tmp_path / 'other' / 'dtd'}")
    assert verify_datasets(tmp_path / "other", ["dtd"])[0].ok
    assert prepare_dataset("dtd", tmp_path / "other", tmp_path / "downloads").endswith("already prepared; nothing to do")
    with pytest.raises(DataError, match="is a file where the dtd folder goes"):
        (tmp_path / "third").mkdir()
        (tmp_path / "third" / "dtd").write_text("a file")
        prepare_dataset("dtd", tmp_path / "third", tmp_path / "downloads")


def test_verify_prints_the_prepare_command_and_the_cli_runs_it(datasets_root, tmp_path, monkeypatch, capsys):
    files = pack("eurosat", datasets_root, tmp_path / "downloads")
    publish(monkeypatch, "eurosat", files)
    root = tmp_path / "data"
    root.mkdir()
    text = format_report(verify_datasets(root, ["eurosat", "ucf101"]))
    assert (f"  -> fix: vlprompt data prepare eurosat --root {root} --from DIR   (DIR holding EuroSAT.zip, "
            "split_zhou_EuroSAT.json)") in text
    assert f"  -> or, online: vlprompt data prepare eurosat --root {root} --download" in text
    assert "ucf101 --root" in text and f"ucf101 --root {root} --download" not in text  # no address
    assert main(["data", "prepare", "eurosat", "--root", str(root), "--from", str(tmp_path / "downloads")]) == 0
    assert f"eurosat: prepared in {root / 'eurosat'}" in capsys.readouterr().out
    assert main(["data", "verify", "--root", str(root), "--dataset", "eurosat"]) == 0
    assert main(["data", "prepare", "eurosat", "nonsense", "--root", str(root), "--download"]) != 0
