"""Split files in and out: CoOp's split_zhou JSON and rethinking_fewshot_vlms' few-shot JSONL, written, read back
identically, and taken by a run (data.split_file) so that it trains on exactly the listed images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlprompt.cli.main import main
from vlprompt.data.datasets import read_dataset
from vlprompt.data.sampling import few_shot
from vlprompt.data.split_files import apply_split_file
from vlprompt.engine.config import resolve_config
from vlprompt.engine.datasets import run_dataset, split_base
from vlprompt.engine.split import export_dataset_split, sample_split
from vlprompt.errors import ConfigError, DataError


def farina_line(path: str, label: int, classname: str) -> str:
    """A line as their loader reads it: the fields of Dassl's Datum."""
    return json.dumps({"_impath": path, "_label": label, "_domain": -1, "_classname": classname}) + "\n"


def test_coop_export_of_a_standard_dataset_is_its_split_zhou_file(datasets_root, tmp_path):
    (out,) = export_dataset_split("dtd", str(datasets_root), "coop", tmp_path / "dtd.json")
    original = json.loads((datasets_root / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    assert json.loads(out.read_text()) == original
    data = apply_split_file(read_dataset("dtd", datasets_root), out, split_base("dtd", str(datasets_root)))
    assert data == read_dataset("dtd", datasets_root)


def test_a_published_jsonl_with_another_machines_paths_selects_exactly_its_images(datasets_root, tmp_path):
    """Their files carry the paths of the machine that wrote them; Caltech's file names repeat across classes."""
    data = read_dataset("caltech101", datasets_root)
    picked = [data.train[0], data.train[6], data.train[11]]  # two classes named image_XXXX.jpg in other folders
    other_root = "/leonardo_work/someone/DATA/caltech-101/101_ObjectCategories"
    lines = [farina_line(f"{other_root}/{Path(r.path).relative_to(datasets_root / 'caltech-101/101_ObjectCategories')}",
                         r.label, r.classname) for r in picked]
    (tmp_path / "shot_1-seed_1_train.jsonl").write_text("".join(lines))
    (tmp_path / "shot_1-seed_1_val.jsonl").write_text(farina_line(f"{other_root}/x/../{Path(data.val[0].path).parent.name}/"
                                                                  f"{Path(data.val[0].path).name}", data.val[0].label,
                                                                  data.val[0].classname))
    chosen = apply_split_file(data, tmp_path / "shot_1-seed_1_train.jsonl", None)
    assert chosen.train == picked and chosen.val == [data.val[0]] and chosen.test == data.test


def test_jsonl_lines_that_do_not_fit_the_dataset_are_refused_with_their_line(datasets_root, tmp_path):
    data = read_dataset("dtd", datasets_root)
    r = data.train[0]
    bad = tmp_path / "train.jsonl"
    bad.write_text(farina_line(r.path, r.label + 1, r.classname))
    with pytest.raises(DataError, match=r"train.jsonl line 1: .* has label 1 .* the dataset gives .* label 0"):
        apply_split_file(data, bad, None)
    bad.write_text(farina_line(r.path, r.label, r.classname) + farina_line("/x/" + data.test[0].path, 0, "banded"))
    with pytest.raises(DataError, match="line 2: .* is not an image of the dataset's train split"):
        apply_split_file(data, bad, None)
    bad.write_text(farina_line(r.path, r.label, r.classname) * 2)
    with pytest.raises(DataError, match="more than once"):
        apply_split_file(data, bad, None)
    bad.write_text('{"impath": "a.jpg"}\n')
    with pytest.raises(DataError, match="line 1 is not a few-shot entry"):
        apply_split_file(data, bad, None)


def test_a_few_shot_jsonl_export_is_the_runs_sample_and_reads_back_identically(datasets_root, tmp_path):
    root = str(datasets_root)
    paths = export_dataset_split("oxford_pets", root, "jsonl", tmp_path / "splits", shots=2, seed=3)
    assert [p.name for p in paths] == ["shot_2-seed_3_train.jsonl", "shot_2-seed_3_val.jsonl"]
    first = paths[0].read_text().splitlines()[0]
    assert json.loads(first)["_impath"].startswith("oxford_pets/images/")  # relative to the data root
    sampled = few_shot(read_dataset("oxford_pets", datasets_root), 2, 3)
    data = run_dataset("oxford_pets", root, str(paths[0]))
    assert (data.train, data.val, data.test) == (sampled.train, sampled.val, sampled.test)
    again = export_dataset_split("oxford_pets", root, "jsonl", tmp_path / "again", shots=2, seed=3,
                                 split_file=str(paths[0]))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    (coop,) = export_dataset_split("oxford_pets", root, "coop", tmp_path / "pets.json", shots=2, seed=3)
    read_back = run_dataset("oxford_pets", root, str(coop))
    assert (read_back.train, read_back.val, read_back.test) == (sampled.train, sampled.val, sampled.test)
    with pytest.raises(DataError, match="already exists; nothing was written"):
        export_dataset_split("oxford_pets", root, "coop", tmp_path / "pets.json")


def test_imagenet_few_shot_jsonl_has_no_val_file_as_the_reference(datasets_root, tmp_path):
    paths = export_dataset_split("imagenet", str(datasets_root), "jsonl", tmp_path, shots=1, seed=1)
    assert [p.name for p in paths] == ["shot_1-seed_1_train.jsonl"]
    data = run_dataset("imagenet", str(datasets_root), str(paths[0]))
    assert len(data.train) == 4 and data.val == data.test == read_dataset("imagenet", datasets_root).test


def test_user_folder_split_round_trip_through_the_cli(tmp_path, image_folder_factory, capsys):
    image_folder_factory(tmp_path / "imgs", classnames=["ant", "bee", "cat"])
    spec = f"folder:{tmp_path / 'imgs'}"
    assert main(["data", "export-split", spec, "--format", "coop", "--out", str(tmp_path / "s.json")]) == 0
    assert f"wrote {tmp_path / 's.json'}" in capsys.readouterr().out
    rows = json.loads((tmp_path / "s.json").read_text())["train"]
    assert not Path(rows[0][0]).is_absolute()
    data = run_dataset(spec, None, str(tmp_path / "s.json"))
    original = run_dataset(spec, None, None)
    assert (data.train, data.val, data.test, data.classnames) == (original.train, original.val, original.test,
                                                                  original.classnames)
    with pytest.raises(SystemExit):
        main(["data", "export-split", spec, "--format", "xml", "--out", "x"])
    assert "invalid choice: 'xml' (choose from 'coop', 'jsonl')" in capsys.readouterr().err


def test_the_option_is_checked_at_parse_time(datasets_root, tmp_path):
    base = ["data.dataset=dtd", f"data.root={datasets_root}"]
    with pytest.raises(ConfigError, match="data.split_file=.* does not exist"):
        resolve_config("world-demo", base + [f"data.split_file={tmp_path / 'absent.json'}"])
    (tmp_path / "s.txt").write_text("")
    with pytest.raises(ConfigError, match="must be a CoOp split_zhou .json file or a few-shot .jsonl file"):
        resolve_config("world-demo", base + [f"data.split_file={tmp_path / 's.txt'}"])
    paths = export_dataset_split("dtd", str(datasets_root), "jsonl", tmp_path, shots=2, seed=1)
    with pytest.raises(ConfigError, match=r"is a 2-shot subset and data.shots=16; set data.shots=2 \(or null\)"):
        resolve_config("world-demo", base + [f"data.split_file={paths[0]}"])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not in the split_zhou format"):
        resolve_config("world-demo", base + [f"data.split_file={tmp_path / 'broken.json'}"])
    other = datasets_root / "food-101" / "split_zhou_Food101.json"
    config = resolve_config("world-demo", base + [f"data.split_file={other}"])
    with pytest.raises(DataError, match="does not fit dtd"):
        sample_split(config)


def test_a_run_with_a_split_file_trains_on_exactly_those_images(datasets_root, tmp_path):
    from vlprompt.engine.run import prepare, run_experiment

    data = read_dataset("dtd", datasets_root)
    listed = [data.train[4], data.train[1], data.train[7], data.train[5]]  # two per class, in this order
    split = tmp_path / "shot_2-seed_7_train.jsonl"
    split.write_text("".join(farina_line(r.path, r.label, r.classname) for r in listed))
    config = resolve_config("world-demo", ["data.dataset=dtd", f"data.root={datasets_root}", "data.shots=2",
                                           f"data.split_file={split}", "data.subsample=all", "data.eval_subsets=[all]",
                                           "learner.name=coop", "train.epochs=1",
                                           f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"])
    run = prepare(config)
    assert run.train_data.train == listed and run.train_data.val == data.val
    results = run_experiment(config).results
    assert results["split_file"]["path"] == str(split)
    assert len(results["split_file"]["sha256"]) == 64
    recorded = (Path(results["run_dir"]) / "config.yaml").read_text()
    assert f"split_file: {split}" in recorded
    unchanged = resolve_config("world-demo", ["data.dataset=dtd", f"data.root={datasets_root}"])
    assert "split_file" not in unchanged.to_dict()["data"]  # runs without one keep their ids
