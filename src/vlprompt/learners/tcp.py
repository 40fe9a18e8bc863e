"""TCP, Textual-based Class-aware Prompt tuning (Yao, Zhang and Xu, CVPR 2024; docs/methods/tcp.md).

A CoOp context of M vectors in the text input, plus M class-aware tokens per class made by a small
meta-net (the Textual Knowledge Embedding, TKE) from the frozen model's class text feature: they enter
the text tower at a middle block, in place of the hidden states of the context positions. New classes
get their own tokens from their own frozen features, so the prompts transfer. TCP's knowledge-guided
term (8 · (1 − mean cos) towards the frozen features) is the `kgcoop` regularizer, composed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.deep_prompts import encode_text_injected
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import ClassPromptTokens, encode_in_chunks, init_context, resolve_n_ctx
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import DEFAULT_TEMPLATE, zero_shot_text_features
from vlprompt.options import Options, option


@dataclass
class TCPConfig(Options):
    owner = "tcp"
    n_ctx: int | None = option(None, "number M of context vectors, and of class-aware tokens per class; null: 4 "
                                     "(TCP's scripts), or with ctx_init its word count")
    ctx_init: str | None = option(None, "initialise the context from these words; null: N(0, 0.02^2) (TCP's "
                                        "config sets no init phrase)")
    prompt_template: str = option("{}.", "the words after the context, '{}' standing for the class name; TCP's "
                                         "own per dataset, e.g. '{}, a type of pet.' (docs/methods/tcp.md)")
    frozen_template: str | None = option(None, "template of the frozen class text features the meta-net reads; "
                                               "null: the dataset's hand-crafted template, else 'a photo of a {}.'")
    layer: int = option(8, "0-based index of the text block the class-aware tokens enter (TCP: 8, after 8 of "
                           "ViT-B/16's 12 blocks); at least 1 and below the text tower's block count")
    mix: float = option(1.0, "the context positions entering that block become mix * class-aware tokens + "
                             "(1 - mix) * their hidden states; TCP: 1 (replaced)")
    hidden: int | None = option(None, "hidden width of the meta-net; null: the feature dimension // 4 (TCP)")

    def context_option(self) -> tuple[str, int] | None:
        return None if self.ctx_init else ("n_ctx", self.n_ctx)  # an init phrase is checked when tokenised

    def validate(self) -> None:
        resolve_n_ctx(self, default=4)
        if self.prompt_template.count("{}") != 1:
            raise ConfigError(f"tcp.prompt_template={self.prompt_template!r} must hold '{{}}' exactly once, where "
                              "the class name goes, e.g. '{}.' or '{}, a type of pet.'")
        if self.frozen_template is not None and self.frozen_template.count("{}") != 1:
            raise ConfigError(f"tcp.frozen_template={self.frozen_template!r} must hold '{{}}' exactly once, where "
                              "the class name goes, e.g. 'a photo of a {}.'")
        if self.layer < 1:
            raise ConfigError(f"tcp.layer={self.layer} is not valid: it must be at least 1 (before block 0 the "
                              "class-aware tokens would take the context's place at the input); TCP uses 8")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"tcp.mix={self.mix} is not valid: it must be between 0 and 1 (TCP: 1)")
        if self.hidden is not None and self.hidden < 1:
            raise ConfigError(f"tcp.hidden={self.hidden} must be at least 1, or null for the feature dimension // 4")

    def with_dataset_template(self, template: str | None) -> TCPConfig:
        return replace(self, frozen_template=template) if self.frozen_template is None and template else self


class QuickGELU(nn.Module):
    """x · sigmoid(1.702 x), the activation of TCP's meta-net (and of OpenAI's CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@register_learner
class TCP(PromptLearner):
    """CoOp's context plus class-aware tokens, made from the frozen class features, at a middle text block.

    Learnable tensors: ``ctx`` (M, W) and the meta-net ``meta_net.linear1/linear2`` (D -> H -> M·W).
    """

    name = "tcp"
    Config = TCPConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.CONTEXT,
                              Capability.ENCODE_CONTEXT, Capability.DEEP_PROMPTS, Capability.FIXED_IMAGE_FEATURES,
                              Capability.CLASS_CLASSIFIER, Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: TCPConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        cfg = self.config
        blocks = backbone.text.depth
        if cfg.layer >= blocks:
            raise ConfigError(f"tcp.layer={cfg.layer} is not valid for {backbone.identity.name}: its text tower has "
                              f"{blocks} blocks, so the layer must be between 1 and {blocks - 1}")
        self.ctx_init = cfg.ctx_init or None
        self.n_ctx, self.layer, self.mix = cfg.n_ctx, cfg.layer, cfg.mix
        self.prompt_template = cfg.prompt_template
        self.frozen_template = cfg.frozen_template or DEFAULT_TEMPLATE
        self.ctx = nn.Parameter(init_context(backbone, self.n_ctx, self.ctx_init))
        dim, width = backbone.embed_dim, backbone.text.width
        hidden = cfg.hidden or max(dim // 4, 1)
        self.meta_net = nn.Sequential(OrderedDict([("linear1", nn.Linear(dim, hidden)), ("gelu", QuickGELU()),
                                                   ("linear2", nn.Linear(hidden, self.n_ctx * width))]))
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        """The class prompts' fixed tokens and the frozen class features the meta-net reads."""
        self.classnames = list(classnames)
        placeholder = self.ctx_init or " ".join(["X"] * self.n_ctx)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, self.n_ctx, placeholder, "end",
                                        self.prompt_template)
        frozen = zero_shot_text_features(self.backbone, self.classnames, [self.frozen_template])
        self.register_buffer("frozen_text", frozen, persistent=False)

    def class_tokens(self) -> torch.Tensor:
        """(K, M, W): the meta-net's class-aware tokens of the frozen class features."""
        out = self.meta_net(self.frozen_text.to(self.ctx.dtype))
        return out.reshape(len(self.classnames), self.n_ctx, -1)

    def encode_context(self, ctx: torch.Tensor) -> torch.Tensor:
        """Unnormalised class text features for a given context, the class-aware tokens injected."""
        tokens = self.class_tokens()
        tower = self.backbone.text
        return encode_in_chunks(
            lambda a, b: encode_text_injected(tower, self.tokens.assemble(ctx, a, b), self.tokens.eot[a:b],
                                              self.layer, tokens[a:b], start=1, mix=self.mix),
            len(self.tokens), self.text_chunk)

    def class_text_outputs(self, image_features=None) -> torch.Tensor:
        return self.encode_context(self.ctx)
