"""Zero-shot CLIP: hand-crafted prompts, nothing learned.

With several templates the normalised text features are averaged and re-normalised (CoOp's
``ZeroshotCLIP2`` prompt ensembling, methods.md §1.6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner


def class_prompt(template: str, classname: str) -> str:
    """Fill a template with a class name; underscores become spaces as in the reference."""
    return template.format(classname.replace("_", " "))


@torch.no_grad()
def zero_shot_text_features(backbone: Backbone, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """Normalised (K, D) class features, averaged over templates and re-normalised."""
    if not templates:
        raise ConfigError("zero-shot needs at least one template, e.g. templates=['a photo of a {}.']")
    per_template = [
        F.normalize(backbone.encode_text([class_prompt(t, c) for c in classnames]), dim=-1) for t in templates
    ]
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)


class ZeroShotCLIP(PromptLearner):
    name = "zeroshot"

    def __init__(self, backbone: Backbone, classnames: list[str], templates: list[str] | str | None = None):
        super().__init__(backbone, classnames)
        templates = templates or "a photo of a {}."
        self.templates = [templates] if isinstance(templates, str) else list(templates)
        for t in self.templates:
            if "{}" not in t:
                raise ConfigError(f"template {t!r} has no '{{}}' placeholder for the class name")
        self.set_classnames(classnames)

    def options(self) -> dict:
        return {"templates": self.templates}

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        self.register_buffer("_features", zero_shot_text_features(self.backbone, self.classnames, self.templates),
                             persistent=False)

    def text_features(self, image_features=None) -> torch.Tensor:
        return self._features
