"""Base-to-new generalisation (methods.md §1.4, §11.2): train on the base half of the classes, test
on base and new classes with the same final prompt, report B, N and H = 2BN/(B+N).

Per dataset, B and N are averaged over seeds; the average row averages B and N over datasets and
takes H of those averages, as the papers' "average over 11 datasets" rows do.
"""

from __future__ import annotations

from pathlib import Path

from vlprompt.engine.config import load_preset
from vlprompt.errors import ConfigError
from vlprompt.protocols.common import RunPlan, b_n_h, execute, method_config, seed_stats, write_tables


def plan_base_to_new(methods, datasets, seeds, preset: dict, overrides=(), out_dir=Path("runs/base2new"),
                     imbalance_ratio: float | None = None) -> list[RunPlan]:
    data = {"subsample": "base", "eval_subsets": ["base", "new"]}
    if imbalance_ratio is not None:
        data["imbalance_ratio"] = imbalance_ratio
    return [
        RunPlan(m, d, s, method_config(m, preset, list(overrides), data={**data, "dataset": d},
                                       train={"seed": s}, output_dir=str(out_dir / "runs")))
        for d in datasets for m in methods for s in seeds
    ]


def base_to_new_table(plans: list[RunPlan], results: list[dict], methods, datasets) -> tuple[list[str], list[list]]:
    header = ["Dataset", "Method", "Base", "New", "H", "Seeds"]
    rows = []
    averages = {m: ([], []) for m in methods}
    for d in datasets:
        for m in methods:
            mine = [r for p, r in zip(plans, results) if p.method == m and p.dataset == d]
            base = [r["metrics"]["base"]["accuracy"] for r in mine]
            new = [r["metrics"]["new"]["accuracy"] for r in mine]
            b, n, h = b_n_h(base, new)
            averages[m][0].append(b)
            averages[m][1].append(n)
            rows.append([d, m, seed_stats(base), seed_stats(new), f"{h:.2f}", len(mine)])
    if len(datasets) > 1:
        for m in methods:
            b, n, h = b_n_h(*averages[m])
            rows.append(["Average", m, f"{b:.2f}", f"{n:.2f}", f"{h:.2f}", ""])
    return header, rows


def run_base_to_new(methods: list[str], seeds: list[int], preset: str, overrides: list[str] = (),
                    out_dir: Path = Path("runs/base2new"), datasets: list[str] | None = None,
                    workers: int = 1) -> str:
    """Run every (dataset, method, seed), skipping finished runs; write and return the Markdown table."""
    if not methods or not seeds:
        raise ConfigError("give at least one method and one seed")
    preset_dict = load_preset(preset)
    datasets = datasets or [preset_dict.get("data", {}).get("dataset", "world:objects")]
    plans = plan_base_to_new(methods, datasets, seeds, preset_dict, overrides, out_dir)
    results = execute(plans, workers)
    header, rows = base_to_new_table(plans, results, methods, datasets)
    return write_tables(out_dir, "base_to_new", header, rows)
