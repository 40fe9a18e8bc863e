"""Base-to-new generalisation (methods.md §1.4, §11.2): train on the base half of the classes, test
on base and new classes with the same final prompt, report B, N and H = 2BN/(B+N).

Per dataset, B and N are averaged over seeds; the average row averages B and N over datasets and
takes H of those averages, as the papers' "average over 11 datasets" rows do. The same numbers are
drawn as grouped bars in base_to_new.png.
"""

from __future__ import annotations

from pathlib import Path

from vlprompt.engine.config import load_preset
from vlprompt.errors import ConfigError
from vlprompt.protocols.common import (RunPlan, b_n_h, default_datasets, execute, method_config, seed_stats,
                                       write_tables)
from vlprompt.report.figures import plot_base_to_new


def plan_base_to_new(methods, datasets, seeds, preset: dict, overrides=(), out_dir=Path("runs/base2new"),
                     imbalance_ratio: float | None = None) -> list[RunPlan]:
    data = {"subsample": "base", "eval_subsets": ["base", "new"]}
    keys, protocol = {}, "base_to_new"
    if imbalance_ratio is not None:
        data["imbalance_ratio"] = imbalance_ratio
        keys, protocol = {"ratio": imbalance_ratio}, "imbalanced"
    return [
        RunPlan(m, d, s, method_config(m, preset, list(overrides), data={**data, "dataset": d},
                                       train={"seed": s}, output_dir=str(out_dir / "runs")),
                keys=dict(keys), protocol=protocol)
        for d in datasets for m in methods for s in seeds
    ]


def base_new_accuracies(plans: list[RunPlan], results: list[dict], methods, datasets) -> dict:
    """(dataset, method) -> (base accuracies, new accuracies), one value per seed."""
    found = {}
    for d in datasets:
        for m in methods:
            mine = [r for p, r in zip(plans, results) if p.method == m and p.dataset == d]
            found[d, m] = ([r["metrics"]["base"]["accuracy"] for r in mine],
                           [r["metrics"]["new"]["accuracy"] for r in mine])
    return found


def base_new_means(accuracies: dict, methods, datasets) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Panel (each dataset, then "Average" if there are several) -> method -> (B, N, H)."""
    panels = {d: {m: b_n_h(*accuracies[d, m]) for m in methods} for d in datasets}
    if len(datasets) > 1:
        panels["Average"] = {m: b_n_h([panels[d][m][0] for d in datasets], [panels[d][m][1] for d in datasets])
                             for m in methods}
    return panels


def base_to_new_table(accuracies: dict, methods, datasets) -> tuple[list[str], list[list]]:
    header = ["Dataset", "Method", "Base", "New", "H", "Seeds"]
    means = base_new_means(accuracies, methods, datasets)
    rows = [[d, m, seed_stats(accuracies[d, m][0]), seed_stats(accuracies[d, m][1]), f"{means[d][m][2]:.2f}",
             len(accuracies[d, m][0])] for d in datasets for m in methods]
    if "Average" in means:
        rows += [["Average", m, *(f"{v:.2f}" for v in means["Average"][m]), ""] for m in methods]
    return header, rows


def run_base_to_new(methods: list[str], seeds: list[int], preset: str, overrides: list[str] = (),
                    out_dir: Path = Path("runs/base2new"), datasets: list[str] | None = None,
                    workers: int = 1) -> str:
    """Run every (dataset, method, seed), skipping finished runs; write and return the Markdown table."""
    if not methods or not seeds:
        raise ConfigError("give at least one method and one seed")
    preset_dict = load_preset(preset)
    datasets = datasets or default_datasets(preset_dict)
    plans = plan_base_to_new(methods, datasets, seeds, preset_dict, overrides, out_dir)
    results = execute(plans, workers)
    accuracies = base_new_accuracies(plans, results, methods, datasets)
    plot_base_to_new(base_new_means(accuracies, methods, datasets), out_dir / "base_to_new.png")
    header, rows = base_to_new_table(accuracies, methods, datasets)
    return write_tables(out_dir, "base_to_new", header, rows)
