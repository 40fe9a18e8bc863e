"""Class-imbalanced base-to-new (methods.md §10.6): the few-shot training set is downsampled to
n_k = max(1, round(16 * ratio^(k/(K-1)))) per class, tests stay balanced; one block per ratio."""

from __future__ import annotations

from pathlib import Path

from vlprompt.engine.config import load_preset
from vlprompt.errors import ConfigError
from vlprompt.protocols.base_to_new import base_new_accuracies, base_to_new_table, plan_base_to_new
from vlprompt.protocols.common import execute, write_tables

DEFAULT_RATIOS = (1.0, 0.25, 0.0625)


def run_imbalanced(methods: list[str], datasets: list[str], seeds: list[int], preset: str,
                   ratios: list[float] = DEFAULT_RATIOS, overrides: list[str] = (),
                   out_dir: Path = Path("runs/imbalanced"), workers: int = 1) -> str:
    if not (methods and datasets and seeds and ratios):
        raise ConfigError("give at least one method, dataset, seed and ratio")
    preset_dict = load_preset(preset)
    header, rows = None, []
    for ratio in ratios:
        plans = plan_base_to_new(methods, datasets, seeds, preset_dict, overrides, out_dir, imbalance_ratio=ratio)
        results = execute(plans, workers)
        header, block = base_to_new_table(base_new_accuracies(plans, results, methods, datasets), methods, datasets)
        rows += [[f"{ratio:g}"] + r for r in block]
    return write_tables(out_dir, "imbalanced", ["Ratio"] + header, rows)
