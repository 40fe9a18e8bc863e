"""Protocols are registered objects: every registered protocol plans the same runs through a sweep spec as
directly, unknown names are refused with the valid ones, a run found without a registry is claimed by the
protocol that planned it, and a protocol defined here (not in vlprompt) is planned by sweep specs, run,
written and reported like a built-in one, figure included."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from html_page import parse
from PIL import Image

from vlprompt.errors import ConfigError
from vlprompt.io import pyplot, save_figure
from vlprompt.protocols.common import ProtocolRequest, RunPlan, accuracy, method_config
from vlprompt.protocols.protocol import (
    PROTOCOLS,
    Figure,
    Protocol,
    ProtocolTable,
    list_protocols,
    register_protocol,
    run_protocol,
    unique,
)
from vlprompt.protocols.reproduce import reproduce_spec
from vlprompt.report.figures import FIGURES
from vlprompt.report.html import write_report
from vlprompt.report.paper_tables import protocol_of
from vlprompt.report.protocol_outputs import write_protocol_result
from vlprompt.report.sources import load_rows
from vlprompt.sweep.runner import run_sweep
from vlprompt.sweep.spec import load_spec

SMALL = ["backbone.pretrained=null", "train.epochs=1", "train.batch_size=4"]
BUILT_IN = {"few_shot", "base_to_new", "imbalanced", "domain_generalization", "cross_dataset"}


@pytest.fixture(scope="module")
def images(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("toy-protocol")
    return image_folder_factory(root / "images", classnames=[f"thing {c}" for c in "abcd"], per_class=3)


def test_the_built_in_protocols_are_registered_objects_under_their_names():
    assert set(list_protocols()) >= BUILT_IN
    for name, protocol in PROTOCOLS.items():
        assert isinstance(protocol, Protocol) and protocol.name == name and protocol.title
        assert set(protocol.needs) <= set(protocol.takes) <= {"shots", "ratios", "targets"}
    assert PROTOCOLS.get("few_shot").takes == ("shots",)


@pytest.mark.parametrize("name", sorted(PROTOCOLS.names()))
def test_a_sweep_spec_plans_exactly_what_its_protocol_plans(name, images, tmp_path):
    """For every registered protocol, without a list here: the spec's runs are the protocol's own."""
    every = {"shots": [2, 1], "ratios": [1.0, 0.5], "targets": [f"folder:{images}"]}
    options = {option: value for option, value in every.items() if option in PROTOCOLS.get(name).takes}
    spec = {"protocol": name, "methods": ["zeroshot", "coop"], "datasets": [f"folder:{images}"], "seeds": [1, 2],
            "overrides": SMALL, "out": str(tmp_path / "out"), **options}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out, plans = load_spec(tmp_path / "spec.yaml")
    request = ProtocolRequest(["zeroshot", "coop"], [1, 2], "world-demo", datasets=[f"folder:{images}"],
                              overrides=SMALL, out_dir=out, **options)
    direct = PROTOCOLS.get(name).plan(request)
    assert [p.spec_id for p in plans] == [p.spec_id for p in direct] and plans
    assert {p.protocol for p in plans} == {name}
    assert all(p.run_dir.parent == tmp_path / "out" / "runs" for p in plans)


def test_unknown_protocol_names_are_refused_with_the_valid_ones(images, tmp_path):
    valid = ", ".join(sorted(PROTOCOLS.names()))
    with pytest.raises(ConfigError) as error:
        PROTOCOLS.get("base2new")
    assert str(error.value) == "unknown protocol 'base2new'; valid protocols: " + ", ".join(
        repr(n) for n in sorted(PROTOCOLS.names()))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"protocol": "base2new", "methods": ["coop"]}))
    with pytest.raises(ConfigError, match=f"protocol 'base2new' is not known; choose one of: {valid}$"):
        load_spec(tmp_path / "spec.yaml")
    quoted = ", ".join(repr(n) for n in sorted(PROTOCOLS.names()))
    with pytest.raises(ConfigError, match=f"reproduce.protocol='base2new' is not valid; choose one of: {quoted}$"):
        reproduce_spec("x", {"reproduce": {"protocol": "base2new", "datasets": ["dtd"], "seeds": [1]}})
    done = subprocess.run([sys.executable, "-m", "vlprompt", "run", "base2new", "--methods", "coop",
                           "--datasets", f"folder:{images}", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "unknown protocol 'base2new'; valid protocols:" in done.stderr
    assert all(repr(n) in done.stderr for n in BUILT_IN)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_an_option_the_protocol_does_not_read_is_refused_not_ignored(images, tmp_path):
    """`--shots` for base_to_new used to be dropped without a word: the runs then took the preset's shots."""
    for protocol, option, value in [("base_to_new", "--shots", "4"), ("few_shot", "--targets", "dtd"),
                                    ("base_to_new", "--ratios", "0.5")]:
        done = subprocess.run([sys.executable, "-m", "vlprompt", "run", protocol, "--methods", "coop",
                               "--datasets", f"folder:{images}", option, value, "--out", str(tmp_path / "run")],
                              capture_output=True, text=True, timeout=300)
        takers = [n for n, p in PROTOCOLS.items() if option[2:] in p.takes]
        assert done.returncode == 2 and f"{option} is for the {' and '.join(takers)} protocol" in done.stderr
        assert not (tmp_path / "run").exists()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"protocol": "base_to_new", "methods": ["coop"],
                                                         "datasets": [f"folder:{images}"], "shots": [4]}))
    with pytest.raises(ConfigError, match=r"spec.yaml: shots: is for the few_shot protocol; base_to_new runs take "
                                          r"the preset's data.shots"):
        load_spec(tmp_path / "spec.yaml")


# --- a protocol defined outside vlprompt ---------------------------------------------------------------------


class WorstSeed(Protocol):
    """Each method trained on all classes with every seed; the table keeps each method's worst seed, and the
    figure draws every seed's accuracy (a kind of figure of its own, drawn by a renderer registered here)."""

    name = "toy_worst_seed"
    title = "Worst seed"

    def plan(self, request: ProtocolRequest) -> list[RunPlan]:
        return [RunPlan(m, d, s, method_config(m, request.preset_dict, request.overrides_for(d),
                                               data={"dataset": d, "subsample": "all", "eval_subsets": ["all"]},
                                               train={"seed": s}, output_dir=str(request.out_dir / "runs")),
                        protocol=self.name)
                for d in request.datasets for m in request.methods for s in request.seeds]

    def table(self, plans: list[RunPlan], results: list[dict]) -> ProtocolTable:
        per = {}
        for plan, result in zip(plans, results):
            per.setdefault((plan.dataset, plan.method), []).append(accuracy(result))
        rows = [[d, m, f"{min(accs):.2f}", len(accs)] for (d, m), accs in per.items()]
        panels = {d: {m: accs for (d2, m), accs in per.items() if d2 == d} for d in unique(p.dataset for p in plans)}
        return ProtocolTable(self.name, self.title, ["Dataset", "Method", "Worst seed", "Seeds"], rows,
                             figure=Figure("toy_seed_dots", panels))


def draw_seed_dots(figure: Figure, out_png: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots()
    for panel in figure.panels.values():
        for method, accs in panel.items():
            ax.plot([method] * len(accs), accs, "o")
    return save_figure(fig, out_png)


@pytest.fixture
def worst_seed():
    protocol = register_protocol(WorstSeed())
    FIGURES.register("toy_seed_dots")(draw_seed_dots)
    yield protocol
    PROTOCOLS.unregister("toy_worst_seed")
    FIGURES.unregister("toy_seed_dots")


def worst_seed_rows(run_dirs: list[Path]) -> list[list[str]]:
    """The toy table recomputed from the results.json files on disk."""
    per = {}
    for run_dir in run_dirs:
        r = json.loads((run_dir / "results.json").read_text())
        per.setdefault((r["dataset"], r["method"]), []).append(r["metrics"]["all"]["accuracy"])
    assert all(len(accs) == 2 for accs in per.values())
    return [[d, m, f"{min(accs):.2f}", "2"] for (d, m), accs in per.items()]


def test_a_protocol_registered_outside_vlprompt_is_swept_written_and_reported(worst_seed, images, tmp_path):
    out = tmp_path / "sweep"
    spec = {"protocol": "toy_worst_seed", "methods": ["zeroshot", "coop"], "datasets": [f"folder:{images}"],
            "seeds": [1, 2], "out": str(out), "overrides": SMALL + ["data.shots=2", f"cache_dir={tmp_path / 'cache'}"]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    _, plans = load_spec(tmp_path / "spec.yaml")
    assert [(p.method, p.seed, p.protocol) for p in plans] == [
        ("zeroshot", 1, "toy_worst_seed"), ("zeroshot", 2, "toy_worst_seed"),
        ("coop", 1, "toy_worst_seed"), ("coop", 2, "toy_worst_seed")]
    rows = run_sweep(plans)
    assert [r.state for r in rows] == ["done"] * 4 and {r.protocol for r in rows} == {"toy_worst_seed"}
    expected = worst_seed_rows([p.run_dir for p in plans])

    index = write_report(out, tmp_path / "report")
    page = parse(index)
    assert "<h2>Worst seed</h2>" in index.read_text()
    assert page.tables[0] == [["Dataset", "Method", "Worst seed", "Seeds"], *expected]
    with open(index.parent / "csv" / "toy_worst_seed.csv") as f:
        assert list(csv.reader(f)) == [["Dataset", "Method", "Worst seed", "Seeds"], *expected]
    assert "img/toy_worst_seed.png" in page.images
    with Image.open(index.parent / "img" / "toy_worst_seed.png") as png:
        assert png.format == "PNG"

    # `vlprompt run`'s path: the same runs (found finished), the table as Markdown and CSV, and the figure
    request = ProtocolRequest(["zeroshot", "coop"], [1, 2], "world-demo", datasets=[f"folder:{images}"],
                              overrides=spec["overrides"], out_dir=out)
    result = run_protocol("toy_worst_seed", request)
    assert [p.spec_id for p in result.plans] == [p.spec_id for p in plans]
    markdown = write_protocol_result(result, tmp_path / "tables")
    assert markdown.splitlines()[0] == "| Dataset | Method | Worst seed | Seeds |"
    with open(tmp_path / "tables" / "toy_worst_seed.csv") as f:
        assert list(csv.reader(f))[1:] == expected
    with Image.open(tmp_path / "tables" / "toy_worst_seed.png") as png:
        assert png.format == "PNG"


def test_a_protocol_name_is_registered_once(worst_seed):
    with pytest.raises(ValueError, match="protocol 'toy_worst_seed' is registered twice"):
        register_protocol(WorstSeed())


@pytest.mark.parametrize("name", [n for n, p in PROTOCOLS.in_registration_order() if p.paper_comparison])
def test_a_run_found_without_a_registry_is_claimed_by_the_protocol_that_planned_it(name, tmp_path):
    """The papers' comparison reads a folder of runs by asking the protocols which one each run is."""
    request = ProtocolRequest(["coop"], [1], "world-demo", datasets=["world:objects"], out_dir=tmp_path)
    plan = PROTOCOLS.get(name).plan(request)[0]
    config = plan.config.to_dict()
    metrics = {s: {"accuracy": 50.0} for s in plan.config.data.eval_subsets}
    metrics["datasets"] = {t: {"accuracy": 40.0} for t in plan.config.data.eval_datasets}
    plan.run_dir.mkdir(parents=True)
    (plan.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (plan.run_dir / "results.json").write_text(json.dumps({
        "method": "coop", "regularizers": [], "dataset": "world:objects", "seed": 1, "run_id": plan.config.run_id(),
        "shots": plan.config.data.shots, "metrics": metrics}))
    (row,) = load_rows(tmp_path)
    assert row.protocol is None and protocol_of(row) == name
