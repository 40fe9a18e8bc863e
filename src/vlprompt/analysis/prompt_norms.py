"""Prompt-norm tracking: per-position norms of a prompt and their history over training epochs.

The history comes from the per-epoch metrics that the Nemesis regularizer logs as ``nemesis_norm_{j}``
(class mean for a class-specific context), the curves of methods.md §11.6.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlprompt.errors import ConfigError
from vlprompt.io import pyplot, save_figure
from vlprompt.regularizers.nemesis import position_norms

__all__ = ["position_norms", "norm_history", "plot_norm_history"]

_NORM_KEY = re.compile(r"nemesis_norm_(\d+)")


def norm_history(metrics_jsonl_path: str | Path) -> tuple[list[int], dict[int, list[float]]]:
    """(epochs, {position: norms per epoch}) from a run's metrics.jsonl."""
    path = Path(metrics_jsonl_path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; give the metrics.jsonl of a run")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    epochs, history = [], {}
    for record in records:
        positions = {int(m.group(1)): v for k, v in record.items() if (m := _NORM_KEY.fullmatch(k))}
        if not positions:
            continue
        epochs.append(record["epoch"])
        for j, v in positions.items():
            history.setdefault(j, []).append(v)
    if not epochs:
        raise ConfigError(f"{path} holds no per-position prompt norms (nemesis_norm_*); they are logged by "
                          "runs with the nemesis regularizer")
    return epochs, dict(sorted(history.items()))


def plot_norm_history(metrics_jsonl_path: str | Path, out_png: str | Path) -> Path:
    """Line plot of every position's norm against the epoch; returns the PNG path."""
    plt = pyplot()
    epochs, history = norm_history(metrics_jsonl_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis", max(len(history), 2))
    for j, norms in history.items():
        ax.plot(epochs, norms, color=cmap(j), label=f"position {j}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("prompt vector norm")
    ax.set_title("per-position prompt norms")
    if len(history) <= 16:
        ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, out_png)
