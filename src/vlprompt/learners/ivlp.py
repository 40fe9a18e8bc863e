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

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.deep_prompts import check_token_vit, encode_image_blocks, encode_text_blocks, replace_tokens
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.prompts import ClassPromptTokens, init_context


def _prompt_stack(count: int, n_tokens: int, width: int) -> nn.ParameterDict:
    """Deep prompts keyed by the block they enter (1 .. count), each (n_tokens, width) ~ N(0, 0.02^2)."""
    return nn.ParameterDict(
        {str(j): nn.Parameter(torch.empty(n_tokens, width).normal_(0.0, 0.02)) for j in range(1, count + 1)})


class IVLP(PromptLearner):
    """Learnable tensors: ``ctx`` and ``deep_text.{j}`` (j = 1..J_t-1) on the text side, ``vision_ctx``
    and ``deep_vision.{j}`` (j = 1..J_v-1) on the image side: the index is the block the prompt enters.

    Defaults are the MaPLe repository's IVLP base-to-new config (``vit_b16_c2_ep5_batch4_2+2ctx``):
    2 text and 2 vision tokens in all 12 layers of ViT-B/16.
    """

    name = "ivlp"
    uses_image_tower = True

    def __init__(self, backbone: Backbone, classnames: list[str], n_ctx_text: int = 2, n_ctx_vision: int = 2,
                 prompt_depth_text: int = 12, prompt_depth_vision: int = 12,
                 ctx_init: str | None = "a photo of a"):
        super().__init__(backbone, classnames)
        check_token_vit(backbone.visual)
        layers = {"text": len(backbone.text.transformer.resblocks),
                  "vision": len(backbone.visual.transformer.resblocks)}
        for side, depth in (("text", prompt_depth_text), ("vision", prompt_depth_vision)):
            if not 1 <= depth <= layers[side]:
                raise ConfigError(f"ivlp.prompt_depth_{side}={depth} is not valid: it must be between 1 and "
                                  f"{layers[side]} (this backbone's {side} tower has {layers[side]} layers)")
        for side, n in (("text", n_ctx_text), ("vision", n_ctx_vision)):
            if n < 1:
                raise ConfigError(f"ivlp.n_ctx_{side}={n} is not valid: it must be at least 1")
        self.ctx_init = ctx_init or None
        if self.ctx_init and n_ctx_text > len(self.ctx_init.split(" ")):
            raise ConfigError(f"ivlp.n_ctx_text={n_ctx_text} exceeds the {len(self.ctx_init.split(' '))} words of "
                              f"ivlp.ctx_init={self.ctx_init!r}; use a longer phrase or ctx_init=null (random init)")
        self.n_ctx_text, self.n_ctx_vision = n_ctx_text, n_ctx_vision
        self.prompt_depth_text, self.prompt_depth_vision = prompt_depth_text, prompt_depth_vision
        text_width, vision_width = backbone.text.width, backbone.visual.transformer.width
        self.ctx = nn.Parameter(init_context(backbone, n_ctx_text, self.ctx_init)[:n_ctx_text])
        self.deep_text = _prompt_stack(prompt_depth_text - 1, n_ctx_text, text_width)
        self.vision_ctx = nn.Parameter(torch.empty(n_ctx_vision, vision_width).normal_(0.0, 0.02))
        self.deep_vision = _prompt_stack(prompt_depth_vision - 1, n_ctx_vision, vision_width)
        self.set_classnames(classnames)

    def options(self) -> dict:
        return {"n_ctx_text": self.n_ctx_text, "n_ctx_vision": self.n_ctx_vision,
                "prompt_depth_text": self.prompt_depth_text, "prompt_depth_vision": self.prompt_depth_vision,
                "ctx_init": self.ctx_init}

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        # with word init the placeholder is the whole phrase and the context takes the place of its first M tokens
        placeholder = self.ctx_init or " ".join(["X"] * self.n_ctx_text)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx_text, placeholder, "end")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        n = self.n_ctx_vision

        def hook(j: int, x: torch.Tensor) -> torch.Tensor:
            return replace_tokens(x, x.shape[1] - n, self.deep_vision[str(j)]) if str(j) in self.deep_vision else x

        return F.normalize(encode_image_blocks(self.backbone.visual, images, self.vision_ctx, hook), dim=-1)

    def text_features(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        def hook(j: int, x: torch.Tensor) -> torch.Tensor:
            return replace_tokens(x, 1, self.deep_text[str(j)]) if str(j) in self.deep_text else x

        features = encode_text_blocks(self.backbone.text, self.tokens.assemble(self.ctx), self.tokens.eot, hook)
        return F.normalize(features, dim=-1)
