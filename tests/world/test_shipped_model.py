"""The shipped tiny CLIP: loads through ``load_backbone`` and meets the issue's zero-shot thresholds.

Fails (rather than skips) while the weights file is missing: the shipped weights are a deliverable.
"""

from __future__ import annotations

import pytest

from vlprompt.backbones import load_backbone
from vlprompt.backbones.embedded import EMBEDDED_NAME, EMBEDDED_TAG, WEIGHTS_PATH
from vlprompt.world.zero_shot import zero_shot_accuracy

# Minimum top-1 (%) on the fixed test sets (seed 0, 10 images per class) with each task's template.
THRESHOLDS = {"objects": 50.0, "shapes": 60.0, "colours": 90.0, "textures": 60.0, "objects_new": 45.0}


@pytest.fixture(scope="module")
def shipped():
    assert WEIGHTS_PATH.is_file(), f"{WEIGHTS_PATH} is missing: run `vlprompt world pretrain` and ship its weights"
    assert WEIGHTS_PATH.stat().st_size <= 16 * 2**20
    return load_backbone(EMBEDDED_NAME, EMBEDDED_TAG)


@pytest.mark.parametrize("task", list(THRESHOLDS))
def test_zero_shot_top1_meets_threshold(shipped, task):
    accuracy = zero_shot_accuracy(shipped, task, test_per_class=10, seed=0)
    assert accuracy >= THRESHOLDS[task], f"{task}: {accuracy:.1f}% < {THRESHOLDS[task]}%"
