"""CoOp: M learnable context vectors shared by all classes (or one set per class), methods.md §2."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.fast_text import encode_shared_prefix, supports_shared_prefix
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.prompts import ClassPromptTokens, init_context, template_context_init

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
        ctx_init_template: str | None = None,
    ):
        """``ctx_init_template`` selects ProGrad's initialisation (methods.md §8.3): n_ctx vectors, the
        last ones the words of the template before its class name, the others zero."""
        super().__init__(backbone, classnames)
        if ctx_init and ctx_init_template:
            raise ConfigError(f"coop.ctx_init={ctx_init!r} and coop.ctx_init_template={ctx_init_template!r} are "
                              "two initialisations; set only one of them")
        if (ctx_init or ctx_init_template) and csc:
            log.warning("the context is initialised from words, so class-specific context (csc) is ignored, "
                        "as in the reference")
            csc = False
        self.ctx_init = ctx_init or None
        self.ctx_init_template = ctx_init_template or None
        self.csc = csc
        self.class_token_position = class_token_position
        if self.ctx_init_template:
            self.n_ctx = n_ctx
            ctx, self._template_placeholder = template_context_init(backbone, self.ctx_init_template, n_ctx)
        else:
            self.n_ctx = len(ctx_init.split(" ")) if ctx_init else n_ctx
            ctx = init_context(backbone, self.n_ctx, self.ctx_init, len(classnames) if csc else None)
        self.ctx = nn.Parameter(ctx)
        self.shared_prefix = True  # an execution choice (same numbers either way), not a saved option
        self.set_classnames(classnames)

    def options(self) -> dict:
        return {
            "n_ctx": self.n_ctx,
            "ctx_init": self.ctx_init,
            "csc": self.csc,
            "class_token_position": self.class_token_position,
            "ctx_init_template": self.ctx_init_template,
        }

    @property
    def placeholder(self) -> str:
        if self.ctx_init_template:
            return self._template_placeholder
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
        """Unnormalised class text features for a given context (the learned one or a corrupted copy).

        A unified context before the class token is a prefix shared by all classes: it is encoded
        once (exactly, see ``fast_text``); other layouts take the plain path, truncated after the
        last end-of-text token.
        """
        tower = self.backbone.text
        if self.shared_prefix and ctx.dim() == 2 and self.class_token_position == "end":
            if supports_shared_prefix(tower):
                prefix = torch.cat([self.tokens.token_prefix[0], ctx.to(self.tokens.token_prefix.dtype)])
                return encode_shared_prefix(tower, prefix, self.tokens.token_suffix, self.tokens.eot)
            log.debug("text tower blocks are not plain open_clip blocks: no shared-prefix encoding")
        else:
            log.debug("context is not a shared prefix (csc or class token not at the end): plain text path")
        return tower(self.tokens.assemble(ctx), self.tokens.eot)

    def text_features(self, image_features=None) -> torch.Tensor:
        return F.normalize(self.encode_context(self.ctx), dim=-1)
