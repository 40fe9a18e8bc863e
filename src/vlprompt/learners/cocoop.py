"""CoCoOp: a meta-net turns each image's feature into a shift of the context (methods.md §3).

Every image gets its own K prompts, so the text encoder runs B x K sequences per batch; the image
tower itself stays frozen, so cached image features still apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.fast_text import encode_shared_prefix, supports_shared_prefix
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import ClassPromptTokens, init_context, resolve_n_ctx, saved_context_options
from vlprompt.learners.registry import register_learner
from vlprompt.options import Options, option


@dataclass
class CoCoOpConfig(Options):
    owner = "cocoop"
    n_ctx: int | None = option(None, "number M of context vectors; null: 4, or with ctx_init its word count "
                                     "(the init phrase is the context, as in CoCoOp's code)")
    ctx_init: str | None = option("a photo of a", "initialise the context from these words; null: N(0, 0.02^2)")
    class_token_position: Literal["end", "middle", "front"] = option("end", "where the class name goes")

    def context_option(self) -> tuple[str, int] | None:
        return None if self.ctx_init else ("n_ctx", self.n_ctx)  # an init phrase is checked when tokenised

    @classmethod
    def from_saved(cls, mapping: dict | None) -> CoCoOpConfig:
        return cls.from_mapping(saved_context_options(mapping))

    def validate(self) -> None:
        resolve_n_ctx(self, default=4)


@register_learner
class CoCoOp(PromptLearner):
    """CoOp's context shifted per image by a small meta-net of the image feature."""

    name = "cocoop"
    Config = CoCoOpConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.CONTEXT,
                              Capability.PER_IMAGE_CONTEXT, Capability.FIXED_IMAGE_FEATURES, Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: CoCoOpConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        ctx_init = self.config.ctx_init
        self.ctx_init = ctx_init or None
        self.n_ctx = self.config.n_ctx  # with ctx_init: its word count (CoCoOpConfig settles it)
        self.class_token_position = self.config.class_token_position
        self.ctx = nn.Parameter(init_context(backbone, self.n_ctx, self.ctx_init))
        self.shared_prefix = True  # an execution choice (same numbers either way), not a saved option
        vis_dim, ctx_dim = backbone.embed_dim, backbone.text.width
        hidden = max(vis_dim // 16, 1)
        self.meta_net = nn.Sequential(
            nn.Linear(vis_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, ctx_dim)
        )
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        placeholder = self.ctx_init or " ".join(["X"] * self.n_ctx)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx, placeholder,
                                        self.class_token_position)

    def image_conditioned_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, M, W): the shared context plus the meta-net's shift of each normalised image feature."""
        return self.ctx.unsqueeze(0) + self.meta_net(image_features.to(self.ctx.dtype)).unsqueeze(1)

    def class_text_outputs(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, D), unnormalised: each image's prompts for every class.

        With the class name at the end, an image's start token and context form a prefix shared by
        all its class prompts: it is encoded once per image and the class suffixes against it
        (exactly, see ``fast_text``), instead of K full sequences per image.
        """
        if image_features is None:
            raise ValueError("CoCoOp's prompts depend on the image: pass image features")
        contexts = self.image_conditioned_context(image_features)
        tower = self.backbone.text
        if self.shared_prefix and self.class_token_position == "end" and supports_shared_prefix(tower):
            start = self.tokens.token_prefix[0].expand(len(contexts), -1, -1)
            prefixes = torch.cat([start, contexts.to(start.dtype)], dim=1)
            features = encode_shared_prefix(tower, prefixes, self.tokens.token_suffix, self.tokens.eot)
        else:
            features = torch.stack([tower(self.tokens.assemble(ctx), self.tokens.eot) for ctx in contexts])
        return features
