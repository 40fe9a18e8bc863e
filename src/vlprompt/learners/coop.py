"""CoOp: M learnable context vectors shared by all classes (or one set per class), methods.md §2."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.fast_text import encode_shared_prefix, supports_shared_prefix
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import (
    ClassPromptTokens,
    encode_in_chunks,
    init_context,
    resolve_n_ctx,
    saved_context_options,
    template_context_init,
    template_prefix,
)
from vlprompt.learners.registry import register_learner
from vlprompt.options import Options, option

log = logging.getLogger(__name__)


@dataclass
class CoOpConfig(Options):
    owner = "coop"
    n_ctx: int | None = option(None, "number M of context vectors; null: 16, or with ctx_init its word count "
                                     "(the init phrase is the context, as in CoOp's code)")
    ctx_init: str | None = option(None, "initialise the context from these words, e.g. 'a photo of a'; "
                                        "null: N(0, 0.02^2)")
    csc: bool = option(False, "class-specific context: one context per class (cannot serve new classes)")
    class_token_position: Literal["end", "middle", "front"] = option("end", "where the class name goes")
    ctx_init_template: str | None = option(
        None, "ProGrad's initialisation (methods.md §8.3): zeros, then the words of this template before its "
              "class name; 'dataset' means the dataset's hand-crafted template")

    def context_option(self) -> tuple[str, int] | None:
        return None if self.ctx_init else ("n_ctx", self.n_ctx)  # an init phrase is checked when tokenised

    @classmethod
    def from_saved(cls, mapping: dict | None) -> CoOpConfig:
        return cls.from_mapping(saved_context_options(mapping))

    def validate(self) -> None:
        if self.ctx_init and self.ctx_init_template:
            raise ConfigError(f"coop.ctx_init={self.ctx_init!r} and coop.ctx_init_template="
                              f"{self.ctx_init_template!r} are two initialisations; set only one of them")
        resolve_n_ctx(self, default=16)
        if self.ctx_init_template and self.ctx_init_template != "dataset":
            words = len(template_prefix(self.ctx_init_template).split(" "))
            if words > self.n_ctx:
                raise ConfigError(f"coop.ctx_init_template={self.ctx_init_template!r} has {words} words before "
                                  f"the class name, more than coop.n_ctx={self.n_ctx}; use n_ctx >= {words}")

    @property
    def class_specific(self) -> bool:
        """csc as trained: a context initialised from words is shared, as in the reference."""
        return self.csc and not (self.ctx_init or self.ctx_init_template)

    def with_dataset_template(self, template: str | None) -> CoOpConfig:
        if self.ctx_init_template != "dataset":
            return self
        if not template:
            raise ConfigError("coop.ctx_init_template=dataset needs a dataset with a hand-crafted template; "
                              "give the template itself, e.g. 'a photo of a {}.'")
        return replace(self, ctx_init_template=template)


@register_learner
class CoOp(PromptLearner):
    """M learnable context vectors before the class name, shared by all classes (or one set per class)."""

    name = "coop"
    Config = CoOpConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.CONTEXT,
                              Capability.ENCODE_CONTEXT, Capability.FIXED_IMAGE_FEATURES, Capability.CLASS_CLASSIFIER,
                              Capability.NEW_CLASSES})

    @classmethod
    def capabilities_of(cls, config: CoOpConfig) -> frozenset[Capability]:
        return cls.capabilities - {Capability.NEW_CLASSES} if config.class_specific else cls.capabilities

    def __init__(self, backbone: Backbone, classnames: list[str], config: CoOpConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        cfg = self.config
        if cfg.ctx_init_template == "dataset":
            raise ConfigError("coop.ctx_init_template=dataset must be resolved to the dataset's template "
                              "(build the learner with build_learner and the dataset's template)")
        if cfg.csc and not cfg.class_specific:
            log.warning("the context is initialised from words, so class-specific context (csc) is ignored, "
                        "as in the reference")
        self.csc = cfg.class_specific
        self.ctx_init, self.ctx_init_template = cfg.ctx_init or None, cfg.ctx_init_template or None
        self.class_token_position = cfg.class_token_position
        self.n_ctx = cfg.n_ctx  # with ctx_init: its word count (CoOpConfig settles it)
        if self.ctx_init_template:
            ctx, self._template_placeholder = template_context_init(backbone, self.ctx_init_template, cfg.n_ctx)
        else:
            ctx = init_context(backbone, self.n_ctx, self.ctx_init, len(classnames) if self.csc else None)
        self.ctx = nn.Parameter(ctx)
        self.shared_prefix = True  # an execution choice (same numbers either way), not a saved option
        self.set_classnames(classnames)

    @property
    def placeholder(self) -> str:
        if self.ctx_init_template:
            return self._template_placeholder
        return self.ctx_init or " ".join(["X"] * self.n_ctx)

    def set_classnames(self, classnames: list[str]) -> None:
        """Class-specific contexts serve their own classes in any order (each keeps its class); a unified
        context serves any class list."""
        if self.csc:
            if len(classnames) != self.ctx.shape[0]:
                raise ConfigError(
                    f"class-specific context was learned for {self.ctx.shape[0]} classes and cannot serve "
                    f"{len(classnames)}; use a unified context (csc=false) to transfer to other classes")
            self.follow_class_order(classnames, "CoOp with class-specific contexts")
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
        if ctx.dim() == 3:  # class-specific contexts are stored in the trained class order
            ctx = ctx[self.order]
        if self.shared_prefix and ctx.dim() == 2 and self.class_token_position == "end":
            if supports_shared_prefix(tower):
                prefix = torch.cat([self.tokens.token_prefix[0], ctx.to(self.tokens.token_prefix.dtype)])
                return encode_shared_prefix(tower, prefix, self.tokens.token_suffix, self.tokens.eot)
            log.debug("text tower blocks are not plain open_clip blocks: no shared-prefix encoding")
        else:
            log.debug("context is not a shared prefix (csc or class token not at the end): plain text path")
        return encode_in_chunks(lambda a, b: tower(self.tokens.assemble(ctx, a, b), self.tokens.eot[a:b]),
                                len(self.tokens), self.text_chunk)

    def class_text_outputs(self, image_features=None) -> torch.Tensor:
        return self.encode_context(self.ctx)
