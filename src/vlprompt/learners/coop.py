"""CoOp: M learnable context vectors shared by all classes (or one set per class), methods.md §2."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.prompts import ClassPromptTokens, init_context

log = logging.getLogger(__name__)


class CoOp(PromptLearner):
    name = "coop"

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        n_ctx: int = 16,
        ctx_init: str | None = None,
        csc: bool = False,
        class_token_position: str = "end",
    ):
        super().__init__(backbone, classnames)
        if ctx_init and csc:
            log.warning("ctx_init is set, so class-specific context (csc) is ignored, as in the reference")
            csc = False
        self.ctx_init = ctx_init or None
        self.n_ctx = len(ctx_init.split(" ")) if ctx_init else n_ctx
        self.csc = csc
        self.class_token_position = class_token_position
        self.ctx = nn.Parameter(init_context(backbone, self.n_ctx, self.ctx_init, len(classnames) if csc else None))
        self.set_classnames(classnames)

    def options(self) -> dict:
        return {
            "n_ctx": self.n_ctx,
            "ctx_init": self.ctx_init,
            "csc": self.csc,
            "class_token_position": self.class_token_position,
        }

    @property
    def placeholder(self) -> str:
        return self.ctx_init or " ".join(["X"] * self.n_ctx)

    def set_classnames(self, classnames: list[str]) -> None:
        if self.csc and len(classnames) != self.ctx.shape[0]:
            raise ValueError(
                f"class-specific context was learned for {self.ctx.shape[0]} classes and cannot serve "
                f"{len(classnames)}; use a unified context (csc=false) to transfer to other classes"
            )
        self.classnames = list(classnames)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx, self.placeholder,
                                        self.class_token_position)

    def encode_context(self, ctx: torch.Tensor) -> torch.Tensor:
        """Unnormalised class text features for a given context (the learned one or a corrupted copy)."""
        return self.backbone.text(self.tokens.assemble(ctx), self.tokens.eot)

    def text_features(self, image_features=None) -> torch.Tensor:
        return F.normalize(self.encode_context(self.ctx), dim=-1)
