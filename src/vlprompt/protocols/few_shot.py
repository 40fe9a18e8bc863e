"""Few-shot classification (methods.md §11.1): K shots per class for K in a list, several seeds,
top-1 on the full test split; one row per (dataset, method), one column per shot count, plus the
average over datasets."""

from __future__ import annotations

from pathlib import Path

from vlprompt.engine.config import load_preset
from vlprompt.errors import ConfigError
from vlprompt.protocols.common import RunPlan, accuracy, execute, method_config, seed_stats, write_tables


def run_few_shot(methods: list[str], datasets: list[str], shots: list[int], seeds: list[int], preset: str,
                 overrides: list[str] = (), out_dir: Path = Path("runs/few_shot"), workers: int = 1) -> str:
    if not (methods and datasets and shots and seeds):
        raise ConfigError("give at least one method, dataset, shot count and seed")
    preset_dict = load_preset(preset)
    plans = [
        RunPlan(m, d, s, method_config(m, preset_dict, list(overrides),
                                       data={"dataset": d, "shots": k, "subsample": "all", "eval_subsets": ["all"]},
                                       train={"seed": s},
                                       output_dir=str(out_dir / "runs")), keys={"shots": k})
        for d in datasets for m in methods for k in shots for s in seeds
    ]
    results = execute(plans, workers)
    header = ["Dataset", "Method"] + [f"{k} shots" for k in shots]
    rows = []
    for d in datasets:
        for m in methods:
            row = [d, m]
            for k in shots:
                accs = [accuracy(r) for p, r in zip(plans, results)
                        if p.method == m and p.dataset == d and p.keys["shots"] == k]
                row.append(seed_stats(accs))
            rows.append(row)
    if len(datasets) > 1:
        for m in methods:
            row = ["Average", m]
            for k in shots:
                per_dataset = []
                for d in datasets:
                    accs = [accuracy(r) for p, r in zip(plans, results)
                            if p.method == m and p.dataset == d and p.keys["shots"] == k]
                    per_dataset.append(sum(accs) / len(accs))
                row.append(f"{sum(per_dataset) / len(per_dataset):.2f}")
            rows.append(row)
    return write_tables(out_dir, "few_shot", header, rows)
