"""The settings of the embedded model's pretraining, apart from the recipe so that the command line
can offer them as options without importing torch (``vlprompt world pretrain --help``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class PretrainConfig:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1.5e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    logit_scale_lr_mult: float = 10.0  # the temperature barely moves at the matrices' learning rate
    seed: int = 0
    checkpoint_every: int = 100
    workers: int = 1
    # Scenes come in groups sharing a colour with distinct shapes: colour alone cannot match a caption
    # to its image, so the encoders must learn shapes (without groups shapes stayed at chance).
    group_size: int = 4
