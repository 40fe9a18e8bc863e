"""The report's paper and difference columns: a run registry written the way a sweep writes it (plans of the real
protocols on the real dataset names, config.yaml and results.json in each run directory, rows claimed and
finished), checked in the HTML page, the CSV and the Markdown against the published numbers typed here from
shared/reference/published-numbers.md §4.2-§4.3."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
import yaml
from html_page import parse

from vlprompt.engine.config import load_preset, resolve_config
from vlprompt.errors import ConfigError
from vlprompt.io import write_json, write_text
from vlprompt.protocols.base_to_new import plan_base_to_new
from vlprompt.protocols.few_shot import plan_few_shot
from vlprompt.protocols.transfer import CROSS_DATASET_TARGETS, DG_TARGETS, plan_transfer
from vlprompt.report.html import write_report
from vlprompt.report.published import PUBLISHED_DIR, differences, load_published
from vlprompt.sweep.registry import RunRegistry

ELEVEN = ["imagenet", *CROSS_DATASET_TARGETS["imagenet"]]
# CoOp's base-to-new row (CoCoOp paper) and KgCoOp's, Base / New / H (published-numbers.md §4.2)
COOP = {"imagenet": (76.47, 67.88, 71.92), "caltech101": (98.00, 89.81, 93.73), "oxford_pets": (93.67, 95.29, 94.47),
        "stanford_cars": (78.12, 60.40, 68.13), "oxford_flowers": (97.60, 59.67, 74.06),
        "food101": (88.33, 82.26, 85.19), "fgvc_aircraft": (40.44, 22.30, 28.75), "sun397": (80.60, 65.89, 72.51),
        "dtd": (79.44, 41.18, 54.24), "eurosat": (92.19, 54.74, 68.69), "ucf101": (84.69, 56.05, 67.46)}
COOP_AVERAGE = (82.69, 63.22, 71.66)
KGCOOP_DTD = (77.55, 54.99, 64.35)
FEW_SHOT = {1: 55.0, 16: 70.0}  # measured few-shot accuracy, plus the run's index
SEED_OFFSETS = {1: (1.5, -2.0), 2: (-0.5, 1.0)}  # measured = paper + offset, per seed, for base and new


def measured(paper: tuple, seed: int) -> tuple[float, float]:
    return paper[0] + SEED_OFFSETS[seed][0], paper[1] + SEED_OFFSETS[seed][1]


def finish(reg: RunRegistry, plan, base: float, new: float, extra: dict | None = None) -> None:
    """What ``run_experiment`` leaves in a finished run directory, and the registry row it finishes."""
    config = plan.config
    run_dir = plan.run_dir
    write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    metrics = extra or {"base": {"accuracy": base, "macro_f1": base, "num_samples": 100},
                        "new": {"accuracy": new, "macro_f1": new, "num_samples": 100},
                        "harmonic_mean": 2 * base * new / (base + new)}
    results = {"run_id": config.run_id(), "method": config.learner.name,
               "regularizers": [r.name for r in config.regularizers], "dataset": config.data.dataset,
               "seed": config.train.seed, "shots": config.data.shots,
               "backbone": {"name": config.backbone.name, "pretrained": config.backbone.pretrained, "sha256": "0" * 64},
               "metrics": metrics, "inference": "split_agnostic", "run_dir": str(run_dir)}
    write_json(run_dir / "results.json", results)
    assert reg.claim([plan.spec_id]).spec_id == plan.spec_id
    reg.finish(plan.spec_id, results)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_fixture_report(tmp_path_factory.mktemp("paper"))


def write_fixture_report(root: Path) -> Path:
    """The registry below ``root/out`` and its report in ``root/report`` (also drawn for docs/reproduce.md)."""
    out = root / "out"
    b2n = load_preset("coop-b2n-vitb16")  # ViT-B/16, 16 shots, 200 epochs: CoOp's setting in the paper
    plans = plan_base_to_new(["coop"], ELEVEN, [1, 2], b2n, out_dir=out)
    kgcoop = plan_base_to_new(["coop+kgcoop"], ["dtd"], [1, 2], b2n, out_dir=out)  # 200 epochs, KgCoOp's 100
    rn50 = plan_base_to_new(["coop+kgcoop"], ["eurosat"], [1, 2], b2n, ["backbone.name=RN50", "data.shots=4",
                                                                        "train.epochs=100"], out_dir=out)
    world = plan_base_to_new(["coop"], ["world:objects"], [1, 2], load_preset("world-demo"), out_dir=out)
    cross = plan_transfer("cross_dataset", ["coop"], "imagenet", [1], CROSS_DATASET_TARGETS["imagenet"], b2n,
                          ["train.epochs=50"], out_dir=out)
    # Nemesis' PAN (beta 0) on CoOp, few-shot on RN50: the paper's curve gives only the 11-dataset average
    pan = {**load_preset("coop-fewshot-rn50"), "regularizers_defaults": {"nemesis": {"beta": 0, "omega": 1.0}}}
    few = plan_few_shot(["coop+nemesis"], ELEVEN, [1, 16], [1], pan, out_dir=out)
    # CoOp on RN50 trained on ImageNet: Nemesis' table of CoOp on RN50 is chosen over the ViT-B/16 one
    dg = plan_transfer("domain_generalization", ["coop"], "imagenet", [1], DG_TARGETS["imagenet"],
                       load_preset("coop-fewshot-rn50"), out_dir=out)
    reg = RunRegistry(out)
    try:
        reg.add(plans + kgcoop + rn50 + world + cross + few + dg)
        for p in plans:
            finish(reg, p, *measured(COOP[p.dataset], p.seed))
        for p in kgcoop + rn50:
            finish(reg, p, *measured(KGCOOP_DTD, p.seed))
        for p in world:
            finish(reg, p, 60.0 + p.seed, 50.0 - p.seed)
        for p in cross:
            targets = {t: {"accuracy": 60.0 + i, "macro_f1": 0.0, "num_samples": 10} for i, t in enumerate(
                CROSS_DATASET_TARGETS["imagenet"])}
            finish(reg, p, 0, 0, {"all": {"accuracy": 72.0, "macro_f1": 0.0, "num_samples": 10}, "datasets": targets})
        for i, p in enumerate(few):
            accuracy = FEW_SHOT[p.keys["shots"]] + i
            finish(reg, p, 0, 0, {"all": {"accuracy": accuracy, "macro_f1": 0.0, "num_samples": 10}})
        for p in dg:
            targets = {t: {"accuracy": 30.0 + i, "macro_f1": 0.0, "num_samples": 10}
                       for i, t in enumerate(DG_TARGETS["imagenet"])}
            finish(reg, p, 0, 0, {"all": {"accuracy": 63.0, "macro_f1": 0.0, "num_samples": 10}, "datasets": targets})
    finally:
        reg.close()
    write_report(out, root / "report")
    return root / "report"


def stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def expected_b2n_row(dataset: str, method: str, paper: tuple | None, measured_pairs: list[tuple], differs: str,
                     source: str) -> list[str]:
    base, new = [b for b, _ in measured_pairs], [n for _, n in measured_pairs]
    b, n = statistics.mean(base), statistics.mean(new)
    values = [(stats(base), b), (stats(new), n), (f"{2 * b * n / (b + n):.2f}", 2 * b * n / (b + n))]
    cells = []
    for i, (text, mean) in enumerate(values):
        cells += [text, "—", "—"] if paper is None else [text, f"{paper[i]:.2f}", f"{mean - paper[i]:+.2f}"]
    return [dataset, method, str(len(measured_pairs)), *cells, differs, source]


SKIPT = "[Fig] Koorye/SkipTuning examples/base_to_new.png"
COOP_SOURCE = f"CoOp: {SKIPT}; [Fig] zhengli97/PromptKD images/exp_results.png"


def test_base_to_new_paper_and_difference_in_the_page_csv_and_markdown(report):
    page = parse(report / "index.html")
    table = next(t for t in page.tables if t[0][:3] == ["Dataset", "Method", "Seeds"] and "base (paper)" in t[0])
    header, *body = table
    assert header == ["Dataset", "Method", "Seeds", "base", "base (paper)", "base difference", "new", "new (paper)",
                      "new difference", "H", "H (paper)", "H difference", "Protocol differs from the paper's",
                      "Paper source"]
    rows = {(r[0], r[1]): r for r in body}
    for dataset in ELEVEN:  # the preset's 200 epochs everywhere: CoOp trains ImageNet for 50
        differs = "epochs 200 (paper 50)" if dataset == "imagenet" else ""
        assert rows[dataset, "coop"] == expected_b2n_row(dataset, "coop", COOP[dataset],
                                                         [measured(COOP[dataset], s) for s in (1, 2)], differs,
                                                         COOP_SOURCE)
    # the average over the 11 datasets beside the papers' average row: B and N averaged, H of the averages
    means = [tuple(statistics.mean(measured(COOP[d], s)[i] for s in (1, 2)) for i in (0, 1)) for d in ELEVEN]
    b, n = statistics.mean(m[0] for m in means), statistics.mean(m[1] for m in means)
    h = 2 * b * n / (b + n)
    average = rows["Average (11 datasets)", "coop"]  # the world's runs left out
    assert average[3:12] == [f"{b:.2f}", "82.69", f"{b - 82.69:+.2f}", f"{n:.2f}", "63.22", f"{n - 63.22:+.2f}",
                             f"{h:.2f}", "71.66", f"{h - 71.66:+.2f}"]
    assert average[12] == "epochs 200 (paper 50)"  # its ImageNet runs
    # KgCoOp (coop+kgcoop) at the preset's 200 epochs: the paper trains 100, so the row is flagged
    kg = "KgCoOp: " + SKIPT
    assert rows["dtd", "coop+kgcoop"] == expected_b2n_row(
        "dtd", "coop+kgcoop", KGCOOP_DTD, [measured(KGCOOP_DTD, s) for s in (1, 2)], "epochs 200 (paper 100)", kg)
    assert rows["eurosat", "coop+kgcoop"][12] == "backbone RN50 (paper ViT-B-16); shots 4 (paper 16)"
    assert rows["eurosat", "coop+kgcoop"][4] == "85.64"  # KgCoOp's EuroSAT base, beside the RN50 4-shot run
    # the world's rows: no paper numbers
    world = rows["world:objects", "coop"]
    assert world[4:6] == ["—", "—"] and world[7:9] == ["—", "—"] and world[10:12] == ["—", "—"]
    assert world[12:] == ["", "—"]
    # the page highlights exactly the flagged rows
    html = (report / "index.html").read_text()
    # KgCoOp's average over two datasets cannot stand beside the paper's over 11
    assert rows["Average", "coop+kgcoop"][4:6] == ["—", "—"]
    assert rows["Average", "coop+kgcoop"][12] == "averaged over 2 datasets, the paper over the 11 of its table"
    # ImageNet, CoOp's average and KgCoOp's three rows here; the RN50 domain-generalisation average below
    assert html.count('<tr class="differs">') == 6
    with open(report / "paper" / "paper_base_to_new.csv") as f:
        assert list(csv.reader(f)) == table
    markdown = (report / "paper" / "paper_base_to_new.md").read_text()
    assert "| dtd | coop+kgcoop | 2 | " in markdown and "| epochs 200 (paper 100) |" in markdown


def test_cross_dataset_source_targets_and_their_average(report):
    with open(report / "paper" / "paper_cross_dataset.csv") as f:
        header, *body = list(csv.reader(f))
    rows = {r[2]: r for r in body}
    # ImageNet source accuracy 71.51 and the 10-target average 63.88 (published-numbers.md §4.3)
    assert rows["imagenet (source)"][4:7] == ["72.00 ± 0.00", "71.51", "+0.49"]
    average = statistics.mean(60.0 + i for i in range(10))
    assert rows["Average (targets)"][4:7] == [f"{average:.2f}", "63.88", f"{average - 63.88:+.2f}"]
    assert rows["caltech101"][5:7] == ["—", "—"]  # per-target cells are not in the collected sources
    # trained 50 epochs where CoOp's base-to-new setting says 200: no epochs rule is declared for cross-dataset
    assert rows["Average (targets)"][7] == ""


def test_every_preset_method_has_a_published_file_and_every_table_is_consistent():
    tables = load_published()
    presets = sorted(Path(__file__).resolve().parents[2].joinpath("src/vlprompt/presets").glob("*.yaml"))
    methods = set()
    for path in presets:
        if path.stem.startswith("world-"):
            continue
        p = yaml.safe_load(path.read_text())
        methods.add("+".join([p["learner"]["name"], *(r["name"] for r in p.get("regularizers") or [])]))
    runs_as = set()
    for path in PUBLISHED_DIR.glob("*.yaml"):
        runs_as.update(yaml.safe_load(path.read_text())["runs_as"])
    # plot+nemesis is Nemesis on PLOT: its file says nothing is published for it
    assert methods - runs_as == {"plot+nemesis"}
    for t in tables:
        assert t.source.startswith("[")
        if t.protocol == "base_to_new":
            for dataset, (b, n, h) in t.cells.items():  # H = 2BN/(B+N) to the printed precision
                assert abs(2 * b * n / (b + n) - h) <= 0.011 + (0.05 if t.decimals == 1 else 0), (t.paper, dataset)
            if len(t.cells) == 12:  # the average row is the mean over the 11 datasets
                for i in (0, 1):
                    mean = statistics.mean(t.cells[d][i] for d in ELEVEN)
                    assert abs(mean - t.cells["average"][i]) <= 0.006, (t.paper, i)


def test_few_shot_average_beside_a_plot_value_of_the_right_variant(report):
    with open(report / "paper" / "paper_few_shot.csv") as f:
        header, *body = list(csv.reader(f))
    assert header == ["Dataset", "Method", "Shots", "Seeds", "accuracy", "accuracy (paper)", "accuracy difference",
                      "Protocol differs from the paper's", "Paper source"]
    rows = {(r[0], r[2]): r for r in body}
    assert rows["dtd", "16"][5:7] == ["—", "—"]  # no per-dataset numbers are public
    # runs are indexed dataset by dataset, shots 1 then 16: the 16-shot runs are the odd ones
    average = statistics.mean(FEW_SHOT[16] + i for i in range(1, 22, 2))
    # PAN's curve (beta 0), not PUN's, read off the plot: 74.6 at 16 shots, 59.8 at 1 shot
    assert rows["Average (11 datasets)", "16"][4:8] == [f"{average:.2f}", "≈74.6", f"≈{average - 74.6:+.2f}", ""]
    assert rows["Average (11 datasets)", "1"][5] == "≈59.8"
    assert "ShyFoo/Nemesis figures/result_few_shot_classification.jpg" in rows["Average (11 datasets)", "16"][8]


def test_domain_generalisation_takes_the_table_of_the_runs_backbone(report):
    with open(report / "paper" / "paper_domain_generalization.csv") as f:
        header, *body = list(csv.reader(f))
    rows = {r[2]: r for r in body}
    # CoOp RN50 in Nemesis' table (methods.md §12.3): 62.70 / 55.04 / 32.64 / 22.44 / 54.60, no target average
    assert [rows[d][5] for d in ["imagenet (source)", *DG_TARGETS["imagenet"]]] == [
        "62.70", "55.04", "32.64", "22.44", "54.60"]
    assert rows["imagenetv2"][4:8] == ["30.00 ± 0.00", "55.04", f"{30.0 - 55.04:+.2f}", ""]
    # Nemesis' table has no target average: the ViT-B/16 table's stands beside it, flagged
    assert rows["Average (targets)"][5:8] == ["59.28", f"{statistics.mean(30.0 + i for i in range(4)) - 59.28:+.2f}",
                                              "backbone RN50 (paper ViT-B-16)"]
    assert all("ShyFoo/Nemesis" in rows[d][8] for d in DG_TARGETS["imagenet"])


def test_split_aware_and_transductive_papers_are_flagged(tmp_path):
    config = resolve_config("kgcoop-b2n-vitb16", ["data.dataset=dtd"]).to_dict()
    results = {"inference": "split_agnostic"}
    (dept,) = [t for t in load_published() if t.paper == "KgCoOp+DePT"]
    assert differences(dept, [config], [results], "dtd") == [
        "paper tells the method each test image's split (base or new); measured numbers do not"]
    (kgcoop,) = [t for t in load_published() if t.paper == "KgCoOp" and t.protocol == "base_to_new"]
    assert differences(kgcoop, [config], [results], "dtd") == []  # the preset is KgCoOp's setting
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump({"paper": "Distilled", "runs_as": ["coop+kgcoop"], "tables": [
        {"protocol": "base_to_new", "setting": {"backbone": "ViT-B-16", "transductive": True}, "source": "[R] x",
         "columns": ["base", "new", "H"], "cells": {"dtd": [80, 60, 68.57]}}]}))
    (teacher,) = load_published(tmp_path)
    assert differences(teacher, [config], [results], "dtd") == [
        "paper trains on unlabelled images of every class (transductive); these runs do not"]


def test_a_malformed_published_file_is_refused_naming_it(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"paper": "X", "runs_as": ["coop"], "tables": [
        {"protocol": "base_to_new", "source": "[R] x", "columns": ["base", "new", "H"], "cells": {"dtd": [1, 2]}}]}))
    with pytest.raises(ConfigError, match=r"bad.yaml: table 1, dtd: 2 values for 3 columns"):
        load_published(tmp_path)
