"""Zero-shot accuracy of a backbone on world tasks: the yardstick of the pretraining recipe."""

from __future__ import annotations

import torch

from vlprompt.backbones import Backbone
from vlprompt.data.feature_cache import encode_records
from vlprompt.data.sampling import subsample_classes
from vlprompt.learners.zeroshot import ZeroShotCLIP
from vlprompt.world.tasks import load_task

REPORTED = ("objects", "shapes", "colours", "textures", "counts", "objects_new")


@torch.no_grad()
def zero_shot_accuracy(backbone: Backbone, task: str, test_per_class: int = 10, seed: int = 0) -> float:
    """Top-1 (%) of hand-crafted prompts on a task's test split; ``objects_new`` = the new classes."""
    data = load_task(task.removesuffix("_new"), test_per_class=test_per_class, seed=seed)
    if task.endswith("_new"):
        data = subsample_classes(data, "new")
    features = encode_records(backbone, data, data.test, views=1, seed=0, desc=f"zero-shot {task}")[0]
    labels = torch.tensor([r.label for r in data.test])
    learner = ZeroShotCLIP(backbone, data.classnames, templates=[data.template])
    pred = learner(features=features).logits.argmax(-1)
    return 100.0 * float((pred == labels).float().mean())


def zero_shot_report(backbone: Backbone, tasks=REPORTED, test_per_class: int = 10) -> dict[str, float]:
    return {t: zero_shot_accuracy(backbone, t, test_per_class) for t in tasks}
