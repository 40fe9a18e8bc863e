"""MaPLe (methods.md §4): text prompts in the first J blocks, coupled to image prompts by linear maps.

Text: a shallow context P_0 (M vectors, initialised from the first M words of ``ctx_init`` while the
fixed string stays "{ctx_init} {class}.") and deep prompts P_1..P_{J-1} that replace text positions
1..M before blocks 1..J-1. Image: F_j(P_j), one Linear(text width -> vision width) per depth; F_0(P_0)
is appended after the patch tokens and F_j(P_j) replaces those tokens before block j. The image
tower changes with the prompts, so image features cannot be cached.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.deep_prompts import encode_image_deep, encode_text_deep, token_vit_size
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import ClassPromptTokens, encode_in_chunks, init_context
from vlprompt.learners.registry import register_learner
from vlprompt.options import Options, option


@dataclass
class MaPLeConfig(Options):
    owner = "maple"
    n_ctx: int = option(2, "number M of prompt vectors per depth (text and image)")
    prompt_depth: int = option(9, "number J of blocks that receive prompts (1 = input only)")
    ctx_init: str | None = option("a photo of a", "the fixed phrase before the class name; P_0 starts as its "
                                                  "first M words; null: random P_0")

    def context_option(self) -> tuple[str, int] | None:
        return None if self.ctx_init else ("n_ctx", self.n_ctx)  # an init phrase is checked when tokenised

    def validate(self) -> None:
        if self.n_ctx < 1:
            raise ConfigError(f"maple.n_ctx={self.n_ctx} is not valid: it must be at least 1")
        if self.prompt_depth < 1:
            raise ConfigError(f"maple.prompt_depth={self.prompt_depth} is not valid: it must be at least 1")
        if self.ctx_init and self.n_ctx > len(self.ctx_init.split(" ")):
            raise ConfigError(f"maple.n_ctx={self.n_ctx} exceeds the {len(self.ctx_init.split(' '))} words of "
                              f"maple.ctx_init={self.ctx_init!r}; use a longer phrase or ctx_init=null (random init)")


@register_learner
class MaPLe(PromptLearner):
    """Learnable tensors: ``ctx`` (P_0), ``deep_text.{j}`` (P_j, j = 1..J-1) and
    ``projections.{j}.weight/bias`` (F_j, j = 0..J-1): the index is the block the prompt enters."""

    name = "maple"
    Config = MaPLeConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.CONTEXT,
                              Capability.DEEP_PROMPTS, Capability.PROMPTED_IMAGE_TOWER, Capability.CLASS_CLASSIFIER,
                              Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: MaPLeConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        n_ctx, prompt_depth, ctx_init = self.config.n_ctx, self.config.prompt_depth, self.config.ctx_init
        vision_layers, vision_width = token_vit_size(backbone.visual)
        text_layers, text_width = backbone.text.depth, backbone.text.width
        if not 1 <= prompt_depth <= min(text_layers, vision_layers):
            raise ConfigError(f"maple.prompt_depth={prompt_depth} is not valid: it must be between 1 and "
                              f"{min(text_layers, vision_layers)} (this backbone's text tower has {text_layers} "
                              f"layers, its image tower {vision_layers})")
        self.ctx_init = ctx_init or None
        self.n_ctx, self.prompt_depth = n_ctx, prompt_depth
        self.ctx = nn.Parameter(init_context(backbone, n_ctx, self.ctx_init)[:n_ctx])
        self.deep_text = nn.ParameterDict(
            {str(j): nn.Parameter(torch.empty(n_ctx, text_width, device="cpu").normal_(0.0, 0.02)) for j in range(1, prompt_depth)})
        # As in the reference, F_1..F_{J-1} start as copies of one freshly initialised layer.
        deep = nn.Linear(text_width, vision_width)
        self.projections = nn.ModuleList(
            [nn.Linear(text_width, vision_width)] + [copy.deepcopy(deep) for _ in range(1, prompt_depth)])
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        # with word init the placeholder is the whole phrase and P_0 takes the place of its first M tokens
        placeholder = self.ctx_init or " ".join(["X"] * self.n_ctx)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx, placeholder, "end")

    def text_prompts(self) -> list[torch.Tensor]:
        """[P_0, P_1, ..., P_{J-1}], each (M, text width)."""
        return [self.ctx, *(self.deep_text[str(j)] for j in range(1, self.prompt_depth))]

    def vision_prompts(self) -> list[torch.Tensor]:
        """[F_0(P_0), ..., F_{J-1}(P_{J-1})], each (M, vision width): the image tower's prompts."""
        return [proj(p) for proj, p in zip(self.projections, self.text_prompts())]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        shallow, *deep = self.vision_prompts()
        return encode_image_deep(self.backbone.visual, images, shallow, dict(enumerate(deep, start=1)))

    def class_text_outputs(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        shallow, *deep = self.text_prompts()
        by_block = dict(enumerate(deep, start=1))
        features = encode_in_chunks(
            lambda a, b: encode_text_deep(self.backbone.text, self.tokens.assemble(shallow, a, b), self.tokens.eot[a:b],
                                          by_block), len(self.tokens), self.text_chunk)
        return features
