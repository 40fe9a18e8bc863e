"""Sample grids of world tasks: one row per class (a few classes), images with their class names."""

from __future__ import annotations

from pathlib import Path

from vlprompt.io import pyplot, save_figure
from vlprompt.world.tasks import load_task


def sample_grid(task: str, out: str | Path, classes: int = 6, per_class: int = 6) -> Path:
    data = load_task(task, test_per_class=per_class)
    shown = list(range(min(classes, data.num_classes)))
    fig, axes = pyplot().subplots(len(shown), per_class, figsize=(per_class * 1.1, len(shown) * 1.2))
    for row, label in enumerate(shown):
        records = [r for r in data.test if r.label == label][:per_class]
        for col, record in enumerate(records):
            ax = axes[row][col]
            ax.imshow(data.load_image(record))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(data.classnames[label], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"world:{task}  (template: {data.template!r})", fontsize=9)
    return save_figure(fig, out, dpi=90)
