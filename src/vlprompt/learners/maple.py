"""MaPLe (methods.md §4): coupled deep prompts in both towers.

Text: a shallow context P_0 (M vectors, initialised from the first M words of "a photo of a" while
the fixed string stays "a photo of a {class}.") and deep prompts P_1..P_{J-1} that replace text
positions 1..M before blocks 1..J-1. Vision: F_j(P_j), with one Linear(text width -> vision width)
per depth, appended after the patch tokens at the input and replacing them before blocks 1..J-1.
The image tower is changed, so image features cannot be cached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.deep_prompts import check_vision_tower, encode_image_deep, encode_text_deep
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.prompts import ClassPromptTokens


class MaPLe(PromptLearner):
    name = "maple"
    uses_image_tower = True

    def __init__(self, backbone: Backbone, classnames: list[str], n_ctx: int = 2, prompt_depth: int = 9,
                 ctx_init: str | None = "a photo of a"):
        super().__init__(backbone, classnames)
        check_vision_tower(backbone.visual)
        layers = min(len(backbone.text.transformer.resblocks), len(backbone.visual.transformer.resblocks))
        if not 1 <= prompt_depth <= layers:
            raise ConfigError(f"maple.prompt_depth={prompt_depth} must be between 1 and {layers}, the number of "
                              "layers of the shallower tower")
        self.n_ctx, self.prompt_depth, self.ctx_init = n_ctx, prompt_depth, ctx_init or None
        text_width, vision_width = backbone.text.width, backbone.visual.conv1.out_channels
        if self.ctx_init:
            if n_ctx > len(self.ctx_init.split()):
                raise ConfigError(f"maple.n_ctx={n_ctx} exceeds the {len(self.ctx_init.split())} words of "
                                  f"ctx_init {self.ctx_init!r}")
            with torch.no_grad():
                ctx = backbone.text.embed(backbone.tokenize([self.ctx_init]))[0, 1 : 1 + n_ctx].clone()
        else:
            ctx = torch.empty(n_ctx, text_width).normal_(0, 0.02)
        self.ctx = nn.Parameter(ctx)
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, text_width).normal_(0, 0.02)) for _ in range(prompt_depth - 1)])
        self.projections = nn.ModuleList([nn.Linear(text_width, vision_width) for _ in range(prompt_depth)])
        self.set_classnames(classnames)

    def options(self) -> dict:
        return {"n_ctx": self.n_ctx, "prompt_depth": self.prompt_depth, "ctx_init": self.ctx_init}

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        placeholder = self.ctx_init or " ".join(["X"] * self.n_ctx)
        # with word init the placeholder is the whole phrase: the context replaces its first M tokens
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx, placeholder, "end")

    def vision_prompts(self) -> list[torch.Tensor]:
        text_prompts = [self.ctx, *self.deep_text]
        return [proj(p) for proj, p in zip(self.projections, text_prompts)]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(encode_image_deep(self.backbone.visual, images, self.vision_prompts()), dim=-1)

    def text_features(self, image_features=None) -> torch.Tensor:
        prompts = self.tokens.assemble(self.ctx)
        return F.normalize(encode_text_deep(self.backbone.text, prompts, self.tokens.eot, list(self.deep_text)), dim=-1)
