"""Figures of protocol tables, written beside them: the few-shot curve (accuracy against shots per
class, as in CoOp's figures) and the base-to-new bars (Base, New and H per method).

A protocol's table carries its figure as data with a kind (``protocols.protocol.Figure``); each kind's
renderer is registered in ``FIGURES``, so a protocol with a new kind of figure registers its renderer
here and the report draws it without knowing the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from vlprompt.io import pyplot, save_figure
from vlprompt.protocols.protocol import Figure
from vlprompt.registry import Registry

FIGURES: Registry[Callable[[Figure, Path], Path]] = Registry("figure kind")


def draw_figure(figure: Figure, out_png: str | Path) -> Path:
    """Draw ``figure`` with the renderer of its kind into ``out_png``."""
    return FIGURES.get(figure.kind)(figure, Path(out_png))


@FIGURES.register("shot_curves")
def plot_shot_curves(figure: Figure, out_png: Path) -> Path:
    """Accuracy against shots (``figure.x``): panels[title][method] = (means, stds), one value per shot
    count; stds may be None."""
    panels, shots = figure.panels, figure.x
    plt = pyplot()
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for i, (method, (means, stds)) in enumerate(curves.items()):
            repeated = i >= 10  # the colour cycle has 10 colours: from the 11th curve on, another line and marker
            ax.errorbar(shots, means, yerr=stds, marker="s" if repeated else "o", linestyle="--" if repeated else "-",
                        markersize=4, capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out_png)


@FIGURES.register("base_new_bars")
def plot_base_new_bars(figure: Figure, out_png: Path) -> Path:
    """panels[title][method] = (base, new, harmonic mean): grouped bars, one group per method."""
    panels = figure.panels
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
