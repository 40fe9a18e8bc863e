"""``vlprompt reproduce``: a paper preset's protocol planned, checked against the data on disk, run through the
sweep runner, and timed from the runs it finished, on a data root holding two of the miniature datasets."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from miniature_datasets import build_split_json  # noqa: E402

from vlprompt.engine.config import load_preset  # noqa: E402
from vlprompt.errors import ConfigError  # noqa: E402
from vlprompt.protocols.reproduce import _duration, plan_reproduction, reproduce_spec, reproducible_presets  # noqa: E402

CLI = [sys.executable, "-m", "vlprompt.cli.main"]
ELEVEN = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
          "sun397", "dtd", "eurosat", "ucf101"]
TINY = ["backbone.name=vlprompt-tiny", "backbone.pretrained=null", "train.batch_size=4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two of the eleven datasets, in their real layout."""
    root = tmp_path_factory.mktemp("two-datasets")
    for name in ("caltech101", "dtd"):
        build_split_json(root, name)
    return root


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def vlprompt(*args, check=True):
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_dry_run_plans_the_papers_runs_names_found_and_missing_datasets_and_writes_nothing(root, tmp_path):
    out = tmp_path / "out"
    before = listing(root)
    text = vlprompt("reproduce", "coop-fewshot-rn50", "--root", root, "--out", out, "--dry-run").stdout
    assert "runs: 165 = 11 dataset(s) x 5 shot counts (1, 2, 4, 8, 16) x 3 seed(s) (1, 2, 3)" in text
    assert "found (2): caltech101, dtd" in text
    missing = [n for n in ELEVEN if n not in ("caltech101", "dtd")]
    assert f"missing (9): {', '.join(missing)}" in text
    for name in missing:  # each missing dataset with the command that lays it out
        assert f"vlprompt data prepare {name} --root {root}" in text
    assert "rule for imagenet: train.epochs=50" in text
    assert "time: unknown for the 165 pending runs" in text  # nothing measured yet: no invented estimate
    assert not out.exists() and listing(root) == before


def test_a_run_with_missing_datasets_is_refused_before_anything_is_written(root, tmp_path):
    out = tmp_path / "out"
    done = vlprompt("reproduce", "coop-fewshot-rn50", "--root", root, "--out", out, check=False)
    assert done.returncode == 2
    assert "9 dataset(s) of this protocol are not ready" in done.stderr
    assert f"vlprompt data prepare eurosat --root {root}" in done.stderr and "--datasets" in done.stderr
    assert not out.exists()
    done = vlprompt("reproduce", "coop-fewshot-rn50", "--root", root, "--out", out, "--dry-run",
                    "--timings-from", tmp_path / "nowhere", check=False)
    assert done.returncode == 2 and "--timings-from" in done.stderr and "is not a folder" in done.stderr


def test_reproduce_runs_the_protocol_then_the_dry_run_times_the_rest_from_those_runs(root, tmp_path):
    out, cache = tmp_path / "out", f"cache_dir={tmp_path / 'cache'}"
    common = ["--root", root, "--out", out, "--datasets", "caltech101,dtd", "--shots", "1,2", *TINY, cache]
    vlprompt("reproduce", "coop-fewshot-rn50", "--seeds", "1", *common)
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/results.json"))]
    assert sorted((r["dataset"], r["shots"], r["seed"]) for r in results) == [
        ("caltech101", 1, 1), ("caltech101", 2, 1), ("dtd", 1, 1), ("dtd", 2, 1)]
    rows = list(csv.DictReader((out / "few_shot.csv").open()))
    assert [(r["Dataset"], r["Method"]) for r in rows] == [("caltech101", "coop"), ("dtd", "coop"),
                                                           ("Average", "coop")]
    by = {(r["dataset"], r["shots"]): r["metrics"]["all"]["accuracy"] for r in results}
    assert rows[0]["1 shots"] == f"{by['caltech101', 1]:.2f} ± 0.00"
    assert (out / "report" / "index.html").is_file()
    for r in results:  # the paper's epochs by shot count, with the tiny backbone of the overrides
        config = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
        assert config["train"]["epochs"] == {1: 50, 2: 100}[r["shots"]]
        assert config["backbone"]["name"] == "vlprompt-tiny"

    # seeds 2 of the same runs: each timed by the finished seed-1 run of its (dataset, shots)
    expected = 0.0
    for r in results:
        timings = r["timings_s"]
        expected += sum(v for k, v in timings.items() if k != "train") + timings["train"]
    before = listing(out)
    text = vlprompt("reproduce", "coop-fewshot-rn50", "--seeds", "1,2", *common, "--dry-run").stdout
    assert "runs: 8 = 2 dataset(s) x 2 shot counts (1, 2) x 2 seed(s) (1, 2); 4 already finished" in text
    assert f"time: about {_duration(expected)} for 4 of the 4 pending runs" in text
    assert listing(out) == before


def test_every_reproduce_section_plans_its_protocol(tmp_path):
    names = reproducible_presets()
    assert "coop-fewshot-rn50" in names and "maple-b2n-vitb16" in names
    for name in names:
        spec = reproduce_spec(name, load_preset(name))
        rep = plan_reproduction(name, tmp_path, tmp_path / "out")
        per_dataset = len(spec.seeds) * (len(spec.shots) or 1) * (len(spec.ratios) or 1)
        trained = 1 if spec.protocol in ("domain_generalization", "cross_dataset") else len(spec.datasets)
        assert len(rep.plans) == trained * per_dataset, name
        for plan in rep.plans:  # the preset's own method, regularizer options included
            preset = load_preset(name)
            for reg, spec_reg in zip(plan.config.regularizers, preset.get("regularizers") or []):
                for key, value in spec_reg.items():
                    if key != "name" and not any(f"regularizers_defaults.{reg.name}.{key}=" in o
                                                 for o in spec.per_dataset.get(plan.dataset, [])):
                        assert reg.options.to_dict()[key] == value, (name, key)


def test_per_dataset_rules_reach_only_their_dataset(tmp_path):
    rep = plan_reproduction("coop-nemesis-pun-fewshot-rn50", tmp_path, tmp_path / "out", seeds=[1], shots=[16])
    override = {p.dataset: p.config.regularizers[0].options.food_pets_override for p in rep.plans}
    assert override == {name: name in ("food101", "oxford_pets") for name in ELEVEN}
    epochs = {p.dataset: p.config.train.epochs for p in rep.plans}
    assert epochs["imagenet"] == 50 and epochs["dtd"] == 200
    # the user's overrides come after the paper's rules
    rep = plan_reproduction("coop-nemesis-pun-fewshot-rn50", tmp_path, tmp_path / "out", seeds=[1], shots=[16],
                            datasets=["imagenet", "food101"],
                            overrides=["train.epochs=3", "regularizers_defaults.nemesis.omega=10"])
    assert {p.dataset: (p.config.train.epochs, p.config.regularizers[0].options.omega) for p in rep.plans} == {
        "imagenet": (3, 10.0), "food101": (3, 10.0)}


def test_bad_reproduce_sections_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="has no reproduce: section"):
        reproduce_spec("world-demo", load_preset("world-demo"))
    with pytest.raises(ConfigError, match="reproduce.protocol='b2n'"):
        reproduce_spec("x", {"reproduce": {"protocol": "b2n", "datasets": ["dtd"], "seeds": [1]}})
    with pytest.raises(ConfigError, match="reproduce.shots is for the few_shot protocol"):
        reproduce_spec("x", {"reproduce": {"protocol": "base_to_new", "datasets": ["dtd"], "seeds": [1],
                                           "shots": [4]}})
    with pytest.raises(ConfigError, match="per_dataset.dtd: 'train.epochs' is not of the form key=value"):
        reproduce_spec("x", {"reproduce": {"protocol": "base_to_new", "datasets": ["dtd"], "seeds": [1],
                                           "per_dataset": {"dtd": ["train.epochs"]}}})
    with pytest.raises(ConfigError, match="per_dataset.imagnet: 'imagnet' is not one of reproduce.datasets"):
        reproduce_spec("x", {"reproduce": {"protocol": "base_to_new", "datasets": ["imagenet"], "seeds": [1],
                                           "per_dataset": {"imagnet": ["train.epochs=50"]}}})
    with pytest.raises(ConfigError, match="--shots is for few_shot presets"):
        plan_reproduction("coop-b2n-vitb16", tmp_path, tmp_path / "out", shots=[4])


def test_run_with_a_paper_preset_keeps_its_regularizer_options(tmp_path):
    """`vlprompt run` names methods; a Nemesis preset's beta and omega stay with its coop+nemesis."""
    from vlprompt.protocols.common import ProtocolRequest
    from vlprompt.protocols.few_shot import plan_few_shot

    request = ProtocolRequest(["coop+nemesis"], [1], "coop-nemesis-pan-fewshot-rn50", datasets=["dtd"])
    plan, = plan_few_shot(request.methods, request.datasets, [4], request.seeds, request.preset_dict,
                          out_dir=tmp_path)
    options = plan.config.regularizers[0].options
    assert (options.beta, options.omega, options.n_positions, options.tau) == (0, 1.0, 1, 0.001)
    assert plan.config.train.epochs == 100  # the preset's epochs by shot count
