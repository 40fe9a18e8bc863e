"""Per-epoch curves of every number a run logged in metrics.jsonl (prompt norms apart: they have their
own figure), drawn once by the analysis stage so that the report only copies the image."""

from __future__ import annotations

import json
from pathlib import Path

from vlprompt.io import pyplot, save_figure

NORM_PREFIX = "nemesis_norm_"


def curve_keys(records: list[dict]) -> list[str]:
    """The logged numbers that get a curve, in the order they first appear."""
    keys = (k for r in records for k, v in r.items()
            if k != "epoch" and not k.startswith(NORM_PREFIX) and isinstance(v, (int, float)))
    return list(dict.fromkeys(keys))


def plot_metric_curves(metrics_jsonl_path: str | Path, out_png: str | Path) -> Path | None:
    """One small panel per logged number against the epoch; None when the run logged none."""
    records = [json.loads(line) for line in Path(metrics_jsonl_path).read_text().splitlines() if line.strip()]
    keys = curve_keys(records)
    if not keys:
        return None
    plt = pyplot()
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["epoch"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return save_figure(fig, out_png)
