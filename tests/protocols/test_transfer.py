"""Domain generalisation and cross-dataset transfer on the miniature standard datasets: one prompt trained
on the source, evaluated on each target with its own classes; the tables against the run results."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from miniature_datasets import build_all  # noqa: E402

CLI = [sys.executable, "-m", "vlprompt.cli.main"]
COMMON = ["backbone.pretrained=null", "train.epochs=1", "train.batch_size=4", "data.shots=2"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("miniature"))


def transfer(kind, source, targets, out, root):
    args = ["run", kind, "--methods", "zeroshot,coop", "--datasets", source, "--targets", ",".join(targets),
            "--seeds", "1,2", "--out", str(out), *COMMON, f"data.root={root}", f"cache_dir={out.parent / 'cache'}"]
    done = subprocess.run(CLI + args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for path in (out / "runs").glob("*/results.json"):
        r = json.loads(path.read_text())
        results[r["method"], r["seed"]] = r
    return list(csv.DictReader((out / f"{kind}.csv").open())), results


def expected_cell(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


@pytest.mark.parametrize("kind, source, targets, target_classes", [
    ("domain_generalization", "imagenet", ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"],
     {"imagenetv2": 4, "imagenet_sketch": 4, "imagenet_a": 2, "imagenet_r": 3}),
    ("cross_dataset", "imagenet", ["caltech101", "dtd", "eurosat"], {"caltech101": 3, "dtd": 2, "eurosat": 3}),
])
def test_transfer_table_from_the_runs(tmp_path, root, kind, source, targets, target_classes):
    rows, results = transfer(kind, source, targets, tmp_path / kind, root)
    assert len(results) == 4 and [r["Method"] for r in rows] == ["zeroshot", "coop"]
    for row in rows:
        mine = [results[row["Method"], s]["metrics"] for s in (1, 2)]
        assert row[f"{source} (source)"] == expected_cell([m["all"]["accuracy"] for m in mine])
        target_means = []
        for t in targets:
            accs = [m["datasets"][t]["accuracy"] for m in mine]
            assert row[t] == expected_cell(accs)
            target_means.append(statistics.mean(accs))
            assert len(mine[0]["datasets"][t]["classnames"]) == target_classes[t]  # each target's own classes
        assert row["Average (targets)"] == f"{statistics.mean(target_means):.2f}"
    # the source is scored on its own test split (ImageNet's val folder: 2 images for each of 4 classes)
    coop = results["coop", 1]
    assert coop["dataset"] == source and coop["metrics"]["all"]["num_samples"] == 4 * 2  # imagenet val: 2 per class
