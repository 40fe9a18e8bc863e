"""Zero-shot CLIP: hand-crafted prompts, nothing learned.

With several templates the normalised text features are averaged and re-normalised (CoOp's
``ZeroshotCLIP2`` prompt ensembling, methods.md §1.6).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import check_prompts_fit
from vlprompt.learners.registry import register_learner
from vlprompt.options import Options, option

DEFAULT_TEMPLATE = "a photo of a {}."


def class_prompt(template: str, classname: str) -> str:
    """Fill a template with a class name; underscores become spaces as in the reference."""
    return template.format(classname.replace("_", " "))


@torch.no_grad()
def zero_shot_text_features(backbone: Backbone, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """Normalised (K, D) class features, averaged over templates and re-normalised."""
    if not templates:
        raise ConfigError("zero-shot needs at least one template, e.g. templates=['a photo of a {}.']")
    for t in templates:
        check_prompts_fit(backbone, classnames, lambda c, t=t: class_prompt(t, c))
    per_template = [
        F.normalize(backbone.encode_text([class_prompt(t, c) for c in classnames]), dim=-1) for t in templates
    ]
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)


@dataclass
class ZeroShotConfig(Options):
    owner = "zeroshot"
    templates: list[str] | str | None = option(
        None, "hand-crafted templates with '{}' for the class name, averaged when several; default: the "
              "dataset's template, else 'a photo of a {}.'")

    def validate(self) -> None:
        for t in self.template_list():
            if "{}" not in t:
                raise ConfigError(f"zeroshot.templates: template {t!r} has no '{{}}' placeholder for the class name")

    def template_list(self) -> list[str]:
        templates = self.templates or DEFAULT_TEMPLATE
        return [templates] if isinstance(templates, str) else list(templates)

    def with_dataset_template(self, template: str | None) -> ZeroShotConfig:
        return replace(self, templates=[template]) if self.templates is None and template else self


@register_learner
class ZeroShotCLIP(PromptLearner):
    """Hand-crafted prompts (averaged over templates); nothing is learned."""

    name = "zeroshot"
    Config = ZeroShotConfig
    capabilities = frozenset({Capability.FIXED_IMAGE_FEATURES, Capability.CLASS_CLASSIFIER, Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: ZeroShotConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        self.templates = self.config.template_list()
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        self.register_buffer("_features", zero_shot_text_features(self.backbone, self.classnames, self.templates),
                             persistent=False)

    def text_features(self, image_features=None) -> torch.Tensor:
        return self._features
