"""PLOT: N learned prompts per class matched to the image's regions by optimal transport (docs/methods/plot.md).

Each of the N prompt sets is a CoOp context shared by all classes. An image is scored against a class
by the transport-weighted similarity between its region features and the class's N prompt features
(``transport.transport_similarity``), instead of one cosine between pooled features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.fast_text import encode_shared_prefix, supports_shared_prefix
from vlprompt.backbones.image_tokens import check_token_tower, regions_from_attention_pool
from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput, PromptLearner, clip_logits
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import ClassPromptTokens, encode_in_chunks, init_context
from vlprompt.learners.registry import register_learner
from vlprompt.learners.transport import transport_similarity
from vlprompt.options import Options, option

log = logging.getLogger(__name__)


@dataclass
class PLOTConfig(Options):
    owner = "plot"
    n_ctx: int = option(16, "context vectors M of each prompt")
    n_prompts: int = option(4, "prompts N per class (4 in the paper's tables)")
    global_feature: Literal["off", "logits", "transport"] = option(
        "off", "the pooled image feature: off (PLOT's rule), logits (add CLIP's logits of the pooled features, "
               "PLOT's ImageNet rule) or transport (one more image feature in the transport, as Nemesis' PLOT code)")
    sinkhorn_eps: float = option(0.1, "entropic regularisation of the transport (the kernel is exp(-cost / eps))")
    sinkhorn_iters: int = option(100, "most Sinkhorn iterations")
    sinkhorn_tol: float = option(0.01, "stop when the scaling vector changes by less than this on average")

    def context_option(self) -> tuple[str, int] | None:
        return "n_ctx", self.n_ctx

    def validate(self) -> None:
        for name in ("n_ctx", "n_prompts", "sinkhorn_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"plot.{name}={getattr(self, name)} must be at least 1")
        if not self.sinkhorn_eps > 0:
            raise ConfigError(f"plot.sinkhorn_eps={self.sinkhorn_eps} must be positive")
        if self.sinkhorn_tol < 0:
            raise ConfigError(f"plot.sinkhorn_tol={self.sinkhorn_tol} must not be negative")


@register_learner
class PLOT(PromptLearner):
    """N CoOp contexts per class, scored against the image's region features by optimal transport."""

    name = "plot"
    Config = PLOTConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.CONTEXT,
                              Capability.ENCODE_CONTEXT, Capability.FIXED_IMAGE_FEATURES, Capability.IMAGE_TOKENS,
                              Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: PLOTConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        check_token_tower(backbone.visual)
        cfg = self.config
        if cfg.global_feature == "off" and not regions_from_attention_pool(backbone.visual):
            log.warning("plot transports the patch tokens of %s alone (global_feature=off), which a ViT never "
                        "trained against the text; global_feature=logits or transport keeps its class token in the "
                        "score (docs/methods/plot.md)", backbone.identity.name)
        self.n_ctx = cfg.n_ctx
        # (N, M, W) drawn at once from N(0, 0.02^2), as in the reference
        self.ctx = nn.Parameter(init_context(backbone, cfg.n_ctx, None, cfg.n_prompts))
        self.shared_prefix = True  # an execution choice (same numbers either way), not a saved option
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        self.classnames = list(classnames)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx, " ".join(["X"] * self.n_ctx), "end")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image_tokens(images)

    def encode_context(self, ctx: torch.Tensor) -> torch.Tensor:
        """Unnormalised class text features (1 + N, K, D) of contexts (N, M, W): row 0 is the mean of the N
        prompts' features (the pooled class feature), rows 1..N each prompt's.

        Each context is a prefix shared by all classes, so it is encoded once (exactly, see ``fast_text``).
        """
        tower = self.backbone.text
        if self.shared_prefix and supports_shared_prefix(tower):
            start = self.tokens.token_prefix[0].expand(len(ctx), -1, -1)
            prompts = encode_shared_prefix(tower, torch.cat([start, ctx.to(start.dtype)], dim=1),
                                           self.tokens.token_suffix, self.tokens.eot)
        else:
            prompts = torch.stack([
                encode_in_chunks(lambda a, b, c=c: tower(self.tokens.assemble(c, a, b), self.tokens.eot[a:b]),
                                 len(self.tokens), self.text_chunk) for c in ctx])
        return torch.cat([prompts.mean(dim=0, keepdim=True), prompts])

    def text_features(self, image_features=None) -> torch.Tensor:
        """Normalised (1 + N, K, D): the pooled class feature, then each prompt's (see ``encode_context``)."""
        return F.normalize(self.encode_context(self.ctx), dim=-1)

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Transport scores of normalised image tokens (B, 1 + R, D) against class features (1 + N, K, D)."""
        cfg = self.config
        regions = image_features if cfg.global_feature == "transport" else image_features[:, 1:]
        similarity = transport_similarity(regions, text_features[1:], cfg.sinkhorn_eps, cfg.sinkhorn_iters,
                                          cfg.sinkhorn_tol)
        logits = self.backbone.logit_scale * similarity
        if cfg.global_feature == "logits":
            logits = logits + clip_logits(image_features[:, 0], text_features[0], self.backbone.logit_scale)
        return logits

    def forward(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None) -> LearnerOutput:
        """The base class's path; the output's features are the pooled ones, (B, D) and (K, D), which is what
        regularizers compare with the frozen model's."""
        out = super().forward(images, features)
        return LearnerOutput(logits=out.logits, image_features=out.image_features[:, 0],
                             text_features=out.text_features[0])
