"""Protocols on tiny data: the table's rows and statistics, idempotent reruns, completing killed sweeps."""

from __future__ import annotations

import csv
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

CLI = [sys.executable, "-m", "vlprompt.cli.main"]
COMMON = ["backbone.pretrained=null", "train.epochs=2", "train.batch_size=4"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("protocols")
    return image_folder_factory(root / "images", classnames=[f"thing {c}" for c in "abcdef"], per_class=3)


def run_protocol(protocol, out, images, *extra, methods="zeroshot,coop", seeds="1,2"):
    shots = [] if protocol == "few_shot" else ["data.shots=2"]  # few_shot takes its shots from --shots
    args = ["run", protocol, "--methods", methods, "--datasets", f"folder:{images}", "--seeds", seeds,
            "--out", str(out), *extra, *COMMON, *shots, f"cache_dir={out.parent / 'cache'}"]
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=900)


def results_by(out: Path):
    found = {}
    for path in (out / "runs").glob("*/results.json"):
        r = json.loads(path.read_text())
        found[(r["method"] + "".join("+" + x for x in r["regularizers"]), r["seed"])] = r
    return found


def test_base_to_new_table_statistics_and_idempotent_rerun(tmp_path, images):
    out = tmp_path / "b2n"
    done = run_protocol("base_to_new", out, images)
    assert done.returncode == 0, done.stderr[-3000:]
    found = results_by(out)
    assert len(found) == 4
    rows = list(csv.DictReader((out / "base_to_new.csv").open()))
    assert [r["Method"] for r in rows] == ["zeroshot", "coop"]
    for row in rows:
        base = [found[(row["Method"], s)]["metrics"]["base"]["accuracy"] for s in (1, 2)]
        new = [found[(row["Method"], s)]["metrics"]["new"]["accuracy"] for s in (1, 2)]
        assert row["Base"] == f"{statistics.mean(base):.2f} ± {statistics.stdev(base):.2f}"
        assert row["New"] == f"{statistics.mean(new):.2f} ± {statistics.stdev(new):.2f}"
        b, n = statistics.mean(base), statistics.mean(new)
        assert row["H"] == f"{2 * b * n / (b + n):.2f}"
    with Image.open(out / "base_to_new.png") as figure:
        assert figure.format == "PNG" and figure.width > 300
    # base = first ceil(6/2) = 3 classes, new = the other 3
    some = found[("coop", 1)]["metrics"]
    assert some["base"]["classnames"] == ["thing a", "thing b", "thing c"]
    assert some["new"]["classnames"] == ["thing d", "thing e", "thing f"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")}
    table = (out / "base_to_new.md").read_text()
    again = run_protocol("base_to_new", out, images)
    assert again.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")} == stamps
    assert (out / "base_to_new.md").read_text() == table


@pytest.mark.parametrize("override, protocol", [("data.dataset=world:shapes", "base_to_new"),
                                                ("data.shots=4", "few_shot"), ("train.seed=7", "imbalanced")])
def test_override_of_a_protocol_setting_is_refused_by_name(tmp_path, images, override, protocol):
    done = run_protocol(protocol, tmp_path / "out", images, override)
    assert done.returncode != 0
    key = override.split("=")[0]
    assert f"{key} is set by the protocol" in done.stderr and "--datasets" in done.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_killed_sweep_completes_only_the_missing_runs(tmp_path, images):
    out = tmp_path / "fs"
    extra = ["--shots", "1,2"]
    proc = subprocess.Popen(CLI + ["run", "few_shot", "--methods", "coop", "--datasets", f"folder:{images}",
                                   "--seeds", "1,2", "--out", str(out), *extra, *COMMON,
                                   f"cache_dir={tmp_path / 'cache'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(list((out / "runs").glob("*/results.json"))) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")}
    assert 1 <= len(finished) < 4
    done = run_protocol("few_shot", out, images, *extra, methods="coop")
    assert done.returncode == 0, done.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")}
    assert len(after) == 4
    assert all(after[p] == t for p, t in finished.items())  # finished runs were not redone
    rows = list(csv.DictReader((out / "few_shot.csv").open()))
    assert [r["Method"] for r in rows] == ["coop"] and set(rows[0]) >= {"1 shots", "2 shots"}
    with Image.open(out / "few_shot.png") as figure:
        assert figure.format == "PNG" and figure.width > 300


def test_imbalanced_writes_neural_collapse_beside_accuracies(tmp_path, images):
    """One block per ratio; the NC table's numbers are the metrics of each run's saved prompt on the
    base classes' test images, recomputed here from the artifact and the image features."""
    import torch

    from vlprompt.analysis.neural_collapse import neural_collapse_metrics
    from vlprompt.data.feature_cache import encode_records
    from vlprompt.data.folder import read_image_folder
    from vlprompt.data.sampling import subsample_classes
    from vlprompt.learners.artifact import from_pretrained

    out = tmp_path / "imb"
    done = run_protocol("imbalanced", out, images, "--ratios", "1,0.5", methods="coop,coop+kgcoop", seeds="1")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((out / "imbalanced.csv").open()))
    order = [("1", "coop"), ("1", "coop+kgcoop"), ("0.5", "coop"), ("0.5", "coop+kgcoop")]
    assert [(r["Ratio"], r["Method"]) for r in rows] == order
    table = (out / "imbalanced_neural_collapse.md").read_text().splitlines()
    assert table[0].split("|")[1:-1] == [" Ratio ", " Method ", " Base ", " NC1 ", " image equiangularity ",
                                         " text equiangularity ", " self-duality ", " Seeds "]
    base = subsample_classes(read_image_folder(images), "base")
    labels = torch.tensor([r.label for r in base.test])
    runs = {}
    for path in (out / "runs").glob("*/results.json"):
        config = (path.parent / "config.yaml").read_text()
        result = json.loads(path.read_text())
        label = "+".join([result["method"], *result["regularizers"]])
        runs["1" if "imbalance_ratio: 1.0" in config else "0.5", label] = result
    assert len(runs) == 4
    assert [tuple(c.strip() for c in line.split("|")[1:3]) for line in table[2:]] == order
    for line in table[2:]:
        ratio, method, accuracy, nc1, image_angles, text_angles, duality, seeds = [c.strip() for c in line.split("|")[1:-1]]
        run = runs[ratio, method]
        classifier = from_pretrained(Path(run["run_dir"]) / "prompt", classnames=base.classnames)
        feats = encode_records(classifier.backbone, base, base.test, views=1, seed=0)[0]
        with torch.no_grad():
            expected = neural_collapse_metrics(feats, labels, classifier.text_features())
        assert accuracy == f"{run['metrics']['base']['accuracy']:.2f} ± 0.00" and seeds == "1"
        assert nc1 == f"{expected['nc1']:.3f} ± 0.000"
        assert text_angles == f"{expected['text_equiangularity']:.3f} ± 0.000"
        assert duality == f"{expected['self_duality']:.3f} ± 0.000"
