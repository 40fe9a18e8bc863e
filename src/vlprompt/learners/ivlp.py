"""IVLP (independent vision-language prompting): the MaPLe repository's baseline, and PromptSRC's architecture.

Text: as MaPLe's text side (methods.md §4): a shallow context (M_t vectors, initialised from the first
M_t words of ``ctx_init`` while the fixed string stays "{ctx_init} {class}.") and deep prompts that
replace text positions 1..M_t before blocks 1..J_t-1. Image: M_v learned tokens appended after the
patch tokens (after the positional embedding, before ``ln_pre``) and their own deep prompts that
replace those tokens before blocks 1..J_v-1. Unlike MaPLe the two sides share nothing: every prompt
is a free tensor, all drawn from N(0, 0.02^2) except the word-initialised text context.
The image tower changes with the prompts, so image features cannot be cached.
"""

from __future__ import annotations

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
class IVLPConfig(Options):
    """Defaults: the MaPLe repository's IVLP base-to-new config (``vit_b16_c2_ep5_batch4_2+2ctx``),
    2 text and 2 vision tokens in all 12 layers of ViT-B/16."""

    owner = "ivlp"
    n_ctx_text: int = option(2, "number M_t of text prompt vectors per depth")
    n_ctx_vision: int = option(2, "number M_v of image prompt tokens per depth")
    prompt_depth_text: int = option(12, "number J_t of text blocks that receive prompts (1 = input only)")
    prompt_depth_vision: int = option(12, "number J_v of image blocks that receive prompts (1 = input only)")
    ctx_init: str | None = option("a photo of a", "the fixed phrase before the class name; the text context "
                                                  "starts as its first M_t words; null: random context")

    def context_option(self) -> tuple[str, int] | None:
        return None if self.ctx_init else ("n_ctx_text", self.n_ctx_text)  # an init phrase is checked when tokenised

    def validate(self) -> None:
        for side in ("text", "vision"):
            for what, value in (("n_ctx", getattr(self, f"n_ctx_{side}")),
                                ("prompt_depth", getattr(self, f"prompt_depth_{side}"))):
                if value < 1:
                    raise ConfigError(f"ivlp.{what}_{side}={value} is not valid: it must be at least 1")
        if self.ctx_init and self.n_ctx_text > len(self.ctx_init.split(" ")):
            raise ConfigError(f"ivlp.n_ctx_text={self.n_ctx_text} exceeds the {len(self.ctx_init.split(' '))} "
                              f"words of ivlp.ctx_init={self.ctx_init!r}; use a longer phrase or ctx_init=null "
                              "(random init)")


def _prompt_stack(count: int, n_tokens: int, width: int) -> nn.ParameterDict:
    """Deep prompts keyed by the block they enter (1 .. count), each (n_tokens, width) ~ N(0, 0.02^2)."""
    return nn.ParameterDict(
        {str(j): nn.Parameter(torch.empty(n_tokens, width).normal_(0.0, 0.02)) for j in range(1, count + 1)})


@register_learner
class IVLP(PromptLearner):
    """Independent deep text and image prompts (the MaPLe repository's IVLP; PromptSRC's architecture).

    Learnable tensors: ``ctx`` and ``deep_text.{j}`` (j = 1..J_t-1) on the text side, ``vision_ctx``
    and ``deep_vision.{j}`` (j = 1..J_v-1) on the image side: the index is the block the prompt enters."""

    name = "ivlp"
    Config = IVLPConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.CONTEXT,
                              Capability.DEEP_PROMPTS, Capability.PROMPTED_IMAGE_TOWER, Capability.CLASS_CLASSIFIER,
                              Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: IVLPConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        cfg = self.config
        vision_layers, vision_width = token_vit_size(backbone.visual)
        text_layers, text_width = backbone.text.depth, backbone.text.width
        for side, depth, layers in (("text", cfg.prompt_depth_text, text_layers),
                                    ("vision", cfg.prompt_depth_vision, vision_layers)):
            if depth > layers:
                raise ConfigError(f"ivlp.prompt_depth_{side}={depth} is not valid: it must be between 1 and "
                                  f"{layers} (this backbone's {side} tower has {layers} layers)")
        self.ctx_init = cfg.ctx_init or None
        self.ctx = nn.Parameter(init_context(backbone, cfg.n_ctx_text, self.ctx_init)[: cfg.n_ctx_text])
        self.deep_text = _prompt_stack(cfg.prompt_depth_text - 1, cfg.n_ctx_text, text_width)
        self.vision_ctx = nn.Parameter(torch.empty(cfg.n_ctx_vision, vision_width).normal_(0.0, 0.02))
        self.deep_vision = _prompt_stack(cfg.prompt_depth_vision - 1, cfg.n_ctx_vision, vision_width)
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        # with word init the placeholder is the whole phrase and the context takes the place of its first M tokens
        n_ctx = self.config.n_ctx_text
        placeholder = self.ctx_init or " ".join(["X"] * n_ctx)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, n_ctx, placeholder, "end")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        deep = {int(j): p for j, p in self.deep_vision.items()}
        return encode_image_deep(self.backbone.visual, images, self.vision_ctx, deep)

    def class_text_outputs(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        deep = {int(j): p for j, p in self.deep_text.items()}
        features = encode_in_chunks(
            lambda a, b: encode_text_deep(self.backbone.text, self.tokens.assemble(self.ctx, a, b), self.tokens.eot[a:b],
                                          deep), len(self.tokens), self.text_chunk)
        return features
