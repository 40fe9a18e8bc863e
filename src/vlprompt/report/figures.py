"""Figures of protocol results, written beside their tables: the few-shot curve (accuracy against
shots per class, as in CoOp's figures) and the base-to-new bars (Base, New and H per method)."""

from __future__ import annotations

import math
from pathlib import Path

from vlprompt.io import pyplot, save_figure

# panel title -> method -> values; panels are datasets, plus "Average" when there are several
Panels = dict[str, dict[str, tuple]]


def plot_few_shot(panels: Panels, shots: list[int], out_png: str | Path) -> Path:
    """panels[title][method] = (means, stds), one value per shot count; stds may be None."""
    plt = pyplot()
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for method, (means, stds) in curves.items():
            ax.errorbar(shots, means, yerr=stds, marker="o", markersize=4, capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out_png)


def plot_base_to_new(panels: Panels, out_png: str | Path) -> Path:
    """panels[title][method] = (base, new, harmonic mean): grouped bars, one group per method."""
    plt = pyplot()
    width_per_method = max(len(m) for m in panels.values())
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(5.0, 0.9 * width_per_method + 1.5), 3.4 * len(panels)),
                             squeeze=False)
    for ax, (title, methods) in zip(axes[:, 0], panels.items()):
        names = list(methods)
        for offset, (label, column) in zip((-0.27, 0.0, 0.27), (("Base", 0), ("New", 1), ("H", 2))):
            ax.bar([i + offset for i in range(len(names))], [methods[m][column] for m in names], width=0.26,
                   label=label)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        low = min(min(v) for v in methods.values())
        ax.set_ylim(max(0.0, low - 10.0), 100.0)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=3)
    return save_figure(fig, out_png)
