"""CLIP-LoRA (Zanella & Ben Ayed, CVPR-W 2024; MaxZanella/CLIP-LoRA): low-rank updates of the attention
projections of the text tower, the image tower or both, trained on zero-shot CLIP's objective.

    y = W x + b + (alpha / sqrt(r)) B A dropout(x)    for W in the chosen q, k, v (and o) projections

of the chosen blocks (``backbones.lora``); logits = s * normalize(f) @ normalize(t)^T with f the
(updated) image tower's feature and t the (updated) text tower's feature of the hand-crafted class
prompt. B starts at zero, so the untrained learner is zero-shot CLIP. The frozen backbone is never
modified: the updates are this learner's tensors, applied while it runs the towers.

A learner that updates the image tower trains image features (no feature cache); one that updates the
text tower alone scores cached frozen image features and exports as a plain classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone
from vlprompt.backbones.lora import (
    POSITIONS,
    PROJECTIONS,
    encode_image_updated,
    encode_text_updated,
    image_tower_updates,
    text_tower_updates,
)
from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import check_prompts_fit, encode_in_chunks
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import ZeroShotConfig, class_prompt, zero_shot_text_features
from vlprompt.options import option

ENCODERS = ("text", "vision", "both")


@dataclass
class CLIPLoRAConfig(ZeroShotConfig):
    """Defaults: the official ``run_utils.get_arguments`` (both towers, every block, q, k, v, r 2, alpha 1,
    dropout 0.25)."""

    owner = "clip_lora"
    encoder: str = option("both", "towers whose attention is updated: text, vision or both")
    position: str | list[int] = option("all", "blocks updated in each updated tower: all, bottom, mid, up (thirds "
                                              "of the depth), half-bottom, half-up, top1, top2, top3, or a list "
                                              "of 0-based block indices")
    params: list[str] = option(doc="attention projections updated: any of q, k, v, o (o: the output)",
                               factory=lambda: ["q", "k", "v"])
    r: int = option(2, "rank of each update B A")
    alpha: float = option(1.0, "scale numerator: the update is multiplied by alpha / sqrt(r) (CLIP-LoRA's scale)")
    dropout: float = option(0.25, "dropout rate on the input of each update (training only)")

    def validate(self) -> None:
        super().validate()
        check_choice("clip_lora.encoder", self.encoder, ENCODERS)
        if isinstance(self.position, str):
            check_choice("clip_lora.position", self.position, POSITIONS)
        elif not self.position or len(set(self.position)) != len(self.position) or min(self.position) < 0:
            raise ConfigError(f"clip_lora.position={self.position} must list distinct block indices >= 0")
        for p in self.params:
            check_choice("clip_lora.params", p, PROJECTIONS)
        if not self.params or len(set(self.params)) != len(self.params):
            raise ConfigError(f"clip_lora.params={self.params} must list distinct projections among "
                              f"{', '.join(PROJECTIONS)}")
        if self.r < 1:
            raise ConfigError(f"clip_lora.r={self.r} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"clip_lora.dropout={self.dropout} must lie in [0, 1)")

    @property
    def updates_text(self) -> bool:
        return self.encoder in ("text", "both")

    @property
    def updates_image(self) -> bool:
        return self.encoder in ("vision", "both")


@register_learner
class CLIPLoRA(PromptLearner):
    """Zero-shot CLIP with trained low-rank updates of its towers' attention.

    Learnable tensors: ``text_updates.blocks.{j}.updates.{p}.lora_A.weight`` / ``lora_B.weight`` (and
    ``image_updates...``)
    for block j and projection p."""

    name = "clip_lora"
    Config = CLIPLoRAConfig
    #: with the default encoder=both; ``capabilities_of`` gives each encoder's
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.TUNED_IMAGE_TOWER,
                              Capability.CLASS_CLASSIFIER, Capability.NEW_CLASSES})

    @classmethod
    def capabilities_of(cls, config: CLIPLoRAConfig) -> frozenset[Capability]:
        offered = {Capability.LEARNED_PROMPTS, Capability.CLASS_CLASSIFIER, Capability.NEW_CLASSES}
        offered.add(Capability.TUNED_IMAGE_TOWER if config.updates_image else Capability.FIXED_IMAGE_FEATURES)
        if config.updates_text:
            offered.add(Capability.LEARNED_TEXT)
        return frozenset(offered)

    def __init__(self, backbone: Backbone, classnames: list[str], config: CLIPLoRAConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        cfg = self.config
        self.templates = cfg.template_list()
        update = dict(position=cfg.position, params=list(cfg.params), rank=cfg.r, alpha=cfg.alpha,
                      dropout=cfg.dropout)
        # image first: a ResNet image tower is refused before anything is drawn
        self.image_updates = image_tower_updates(backbone.visual, **update) if cfg.updates_image else None
        self.text_updates = text_tower_updates(backbone.text, **update) if cfg.updates_text else None
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        if self.text_updates is None:  # the frozen text tower: zero-shot features, computed once
            self.register_buffer("_features", zero_shot_text_features(self.backbone, self.classnames, self.templates),
                                 persistent=False)
            return
        for t in self.templates:
            check_prompts_fit(self.backbone, self.classnames, lambda c, t=t: class_prompt(t, c))
        ids = self.backbone.tokenize([class_prompt(t, c) for t in self.templates for c in self.classnames])
        self.register_buffer("prompt_ids", ids, persistent=False)  # template-major: (T * K, L)
        self.register_buffer("prompt_eot", self.backbone.text.eot_positions(ids), persistent=False)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        if self.image_updates is None:
            return self.backbone.encode_image(images)
        return encode_image_updated(self.backbone.visual, images, self.image_updates)

    def text_features(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """The class prompts through the updated text tower, normalised, averaged over templates and
        normalised again (one template, as in the official code: its normalised features)."""
        if self.text_updates is None:
            return self._features
        tower = self.backbone.text

        def encode(start: int, stop: int) -> torch.Tensor:
            with torch.no_grad():
                embeddings = tower.embed(self.prompt_ids[start:stop])
            return encode_text_updated(tower, embeddings, self.prompt_eot[start:stop], self.text_updates)

        rows = self.prompt_ids.shape[0]
        features = F.normalize(encode_in_chunks(encode, rows, self.text_chunk).float(), dim=-1)
        return F.normalize(features.view(len(self.templates), -1, features.shape[-1]).mean(0), dim=-1)
