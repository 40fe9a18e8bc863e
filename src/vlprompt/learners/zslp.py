"""ZS-LP: a linear probe whose class prototypes start from the frozen model's class text features
(CLAP paper's zero-shot-initialised linear probe; jusiro/CLAP `trainers/adapters.py`, init "ZS").

    W_0 = mean over templates of the unnormalised text features of each class' prompts
    logits = s * normalize(f) @ normalize(W)^T

Only W (K, D) trains; it is the classifier itself, so it serves only its own classes but exports as a
plain classifier. CLAP is this learner with the `clap` regularizer (its class-adaptive constraint).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import ZeroShotConfig, class_prompt


@torch.no_grad()
def mean_text_features(backbone: Backbone, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """(K, D) unnormalised text features averaged over templates, as CLAP's base prototypes (it averages
    before normalising, unlike zero-shot CLIP's ensemble, which normalises each template first)."""
    per_template = [backbone.encode_text([class_prompt(t, c) for c in classnames]).float() for t in templates]
    return torch.stack(per_template).mean(0)


@dataclass
class ZSLPConfig(ZeroShotConfig):
    owner = "zslp"


@register_learner
class ZSLP(PromptLearner):
    """A linear probe on the frozen image features, initialised from the class text features."""

    name = "zslp"
    Config = ZSLPConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.FIXED_IMAGE_FEATURES,
                              Capability.CLASS_CLASSIFIER, Capability.CLASS_PROTOTYPES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: ZSLPConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        start = mean_text_features(backbone, classnames, self.config.template_list())
        self.register_buffer("zero_shot_prototypes", start)
        self.prototypes = nn.Parameter(start.clone())
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        """The same classes in another order reorder the prototypes' rows; other classes are refused."""
        self.follow_class_order(classnames, "a zero-shot-initialised linear probe (zslp)")

    def text_features(self, image_features=None) -> torch.Tensor:
        return F.normalize(self.prototypes[self.order], dim=-1)
