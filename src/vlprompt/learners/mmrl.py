"""MMRL, Multi-Modal Representation Learning (Guo and Gu, CVPR 2025; docs/methods/mmrl.md).

A small set of learnable representation tokens lives in a shared space of its own (n, d_r); for each of
the upper blocks of both towers one linear map per tower projects them to that tower's width, and the
projected tokens are inserted after the start-of-text / class token before the first of those blocks
and replace the inserted positions before every later one. The text input is the dataset's hand-crafted
prompt, so nothing else is learned on the text side. The image tower gives two features: the class
token's, through CLIP's frozen projection, and the mean of the representation tokens' outputs, through
a learned projection of its own (``proj_rep``). Both score against the same class text features.

Inference differs between the classes trained on and others (the official ``test``): base classes are
scored by alpha * class-token logits + (1 - alpha) * representation logits, new classes by the
class-token logits alone. ``set_inference_split`` picks one; not told, the learner scores every class
list by the class-token path, the only one the official code applies to classes it did not train on.

Training: CE on the class-token logits (the trainer's), and MMRL's other terms (the representation
logits' share of the CE, the cosine pulls towards the frozen model's features) come from the
``mmrl_loss`` regularizer, which reads the representation logits from the learner's output.

``variant="mmrl++"`` is the journal version (MMRL++): one shared map per tower with a low-rank residual
per block, the frozen projection plus a low-rank term for the representation feature, and the tokens
entering later blocks mixed with the hidden states there by ``beta``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.backbones.deep_prompts import (
    encode_image_inserted,
    encode_text_inserted,
    token_vit_size,
    vit_projection,
)
from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.base import LearnerOutput, PromptLearner, clip_logits
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.prompts import ClassPromptTokens, encode_in_chunks
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import DEFAULT_TEMPLATE, zero_shot_text_features
from vlprompt.options import Options, option

SPLITS = ("base", "new")
VARIANTS = ("mmrl", "mmrl++")


def _low_rank_pair(rows: int, rank: int, cols: int) -> tuple[nn.Parameter, nn.Parameter]:
    """A (rows, rank) drawn as MMRL++ draws it (Kaiming-uniform, a = sqrt 5) and B (rank, cols) zero: A @ B
    starts at zero."""
    a = torch.empty(rows, rank)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    return nn.Parameter(a), nn.Parameter(torch.zeros(rank, cols))


class SharedResidualMaps(nn.Module):
    """MMRL++'s maps of one tower: block i maps x to x (W + A_i B_i)^T + b_i with one trained W shared by all
    blocks, a rank-r residual A_i B_i and a bias of its own, all starting from one nn.Linear's W and b."""

    def __init__(self, base: nn.Linear, blocks: int, rank: int):
        super().__init__()
        self.weight = nn.Parameter(base.weight.detach().clone())
        pairs = [_low_rank_pair(base.out_features, rank, base.in_features) for _ in range(blocks)]
        self.A = nn.ParameterList(a for a, _ in pairs)
        self.B = nn.ParameterList(b for _, b in pairs)
        self.bias = nn.ParameterList(nn.Parameter(base.bias.detach().clone()) for _ in range(blocks))

    def forward(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return F.linear(x, self.weight + self.A[i] @ self.B[i], self.bias[i])


@dataclass
class MMRLConfig(Options):
    """Defaults: the official base-to-new config ``configs/trainers/MMRL/vit_b16.yaml`` (ViT-B/16)."""

    owner = "mmrl"
    n_tokens: int = option(5, "number n of representation tokens (MMRL: 5)")
    rep_dim: int = option(512, "width d_r of the shared representation space (MMRL: 512; 2048 on EuroSAT)")
    first_block: int = option(5, "0-based index of the first block that receives the tokens; every block from there "
                                 "to the text tower's last does, the same indices in the image tower (MMRL: 5, i.e. "
                                 "layers 6-12 of ViT-B/16's 12)")
    alpha: float = option(0.7, "weight of the class-token logits against the representation logits, in the base-"
                               "class scores and in the CE mix of training (MMRL: 0.7)")
    template: str | None = option(None, "the hand-crafted class prompt the text tower reads, '{}' for the class "
                                        "name; null: the dataset's template, else 'a photo of a {}.'")
    variant: str = option("mmrl", "'mmrl' (CVPR 2025) or 'mmrl++' (the journal version: one shared map per tower "
                                  "plus low-rank residuals per block, proj_rep = frozen proj + a low-rank term, "
                                  "tokens mixed with the previous block's by beta)")
    beta: float = option(0.9, "mmrl++ only: from the second receiving block on the token positions become beta * new "
                              "tokens + (1 - beta) * their hidden states (MMRL++: 0.9, per dataset 0.1-0.9)")
    res_rank: int = option(4, "mmrl++ only: rank of each block's residual on the shared map (RES_LORA_DIM 4)")
    proj_rank: int = option(64, "mmrl++ only: rank of the learned term added to the frozen projection (PROJ_LORA_DIM 64)")

    def validate(self) -> None:
        check_choice("mmrl.variant", self.variant, VARIANTS)
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"mmrl.beta={self.beta} is not valid: it must be between 0 and 1 (MMRL++: 0.9)")
        for what, value in (("res_rank", self.res_rank), ("proj_rank", self.proj_rank)):
            if value < 1:
                raise ConfigError(f"mmrl.{what}={value} is not valid: it must be at least 1")
        for what, value, least in (("n_tokens", self.n_tokens, 1), ("rep_dim", self.rep_dim, 1),
                                   ("first_block", self.first_block, 0)):
            if value < least:
                raise ConfigError(f"mmrl.{what}={value} is not valid: it must be at least {least}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"mmrl.alpha={self.alpha} is not valid: it must be between 0 and 1 (MMRL: 0.7)")
        if self.template is not None and self.template.count("{}") != 1:
            raise ConfigError(f"mmrl.template={self.template!r} must hold '{{}}' exactly once, where the class name "
                              "goes, e.g. 'a photo of a {}.'")

    def with_dataset_template(self, template: str | None) -> MMRLConfig:
        return replace(self, template=template) if self.template is None and template else self


@register_learner
class MMRL(PromptLearner):
    """Shared representation tokens projected into the upper blocks of both towers, with a projection of
    their own for the image side.

    Learnable tensors: ``rep_tokens`` (n, d_r); ``to_text.{i}`` and ``to_image.{i}`` (one linear map per
    receiving block i = 0, 1, ..., counted from ``first_block``); ``proj_rep`` (image width, D). MMRL++:
    ``to_text.weight`` / ``to_image.weight`` shared, ``.A.{i}``, ``.B.{i}``, ``.bias.{i}`` per block, and
    ``proj_A``, ``proj_B`` (the frozen projection stays frozen)."""

    name = "mmrl"
    Config = MMRLConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.DEEP_PROMPTS,
                              Capability.PROMPTED_IMAGE_TOWER, Capability.CLASS_CLASSIFIER, Capability.NEW_CLASSES,
                              Capability.SPLIT_AWARE, Capability.REPRESENTATION_LOGITS})

    def __init__(self, backbone: Backbone, classnames: list[str], config: MMRLConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        cfg = self.config
        image_blocks, width = token_vit_size(backbone.visual)
        for side, blocks in (("text", backbone.text.depth), ("image", image_blocks)):
            if cfg.first_block >= blocks:
                raise ConfigError(f"mmrl.first_block={cfg.first_block} is not valid for {backbone.identity.name}: "
                                  f"its {side} tower has {blocks} blocks, so it must be between 0 and {blocks - 1}")
        # the same block indices in both towers, as the official REP_LAYERS: up to the text tower's last block
        # (ViT-L/14's 24 image blocks take the tokens in blocks first_block..11 and carry them on)
        self.blocks = list(range(cfg.first_block, backbone.text.depth))
        if image_blocks <= self.blocks[-1]:
            raise ConfigError(f"mmrl needs an image tower at least as deep as the text tower (the tokens enter the "
                              f"same block indices of both); {backbone.identity.name} has "
                              f"{image_blocks} image and {self.blocks[-1] + 1} text blocks")
        self.template = cfg.template or DEFAULT_TEMPLATE
        self.alpha = cfg.alpha
        self.split: str | None = None
        # drawn on the CPU, as the official code draws them: the token std 0.02; every block's map starts as one
        # deep copy of a single nn.Linear; proj_rep ~ N(0, 1/width) like CLIP's own proj (not a copy of it)
        self.rep_tokens = nn.Parameter(torch.empty(cfg.n_tokens, cfg.rep_dim).normal_(0.0, 0.02))
        to_text, to_image = nn.Linear(cfg.rep_dim, backbone.text.width), nn.Linear(cfg.rep_dim, width)
        self.plus = cfg.variant == "mmrl++"
        self.mix = cfg.beta if self.plus else 1.0
        if self.plus:  # MMRL++: shared maps with per-block residuals; proj_rep = frozen proj + proj_A @ proj_B
            self.to_text = SharedResidualMaps(to_text, len(self.blocks), cfg.res_rank)
            self.to_image = SharedResidualMaps(to_image, len(self.blocks), cfg.res_rank)
            self.proj_A, self.proj_B = _low_rank_pair(width, cfg.proj_rank, backbone.embed_dim)
        else:
            self.to_text = nn.ModuleList(copy.deepcopy(to_text) for _ in self.blocks)
            self.to_image = nn.ModuleList(copy.deepcopy(to_image) for _ in self.blocks)
            self.proj_rep = nn.Parameter(torch.randn(width, backbone.embed_dim) * width ** -0.5)
        self.register_buffer("_no_context", torch.empty(0, backbone.text.width), persistent=False)
        self.set_classnames(classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        """The class prompts' token embeddings and the frozen model's features of the same prompts."""
        self.classnames = list(classnames)
        # the class prompts with an empty context slot: their token embeddings whole, and what the engine reads
        # to size checkpointed class chunks (``len``, ``eot``)
        self.tokens = ClassPromptTokens(self.backbone, self.classnames, 0, "", "end", self.template)
        frozen = zero_shot_text_features(self.backbone, self.classnames, [self.template])
        self.register_buffer("frozen_text", frozen, persistent=False)

    def set_inference_split(self, split: str | None) -> None:
        """"base": alpha * class-token + (1 - alpha) * representation logits; "new": class-token logits;
        None: the class-token logits for any class list (module docstring)."""
        if split is not None and split not in SPLITS:
            raise ConfigError(f"mmrl: inference split {split!r} is not valid; valid: 'base', 'new' or None")
        self.split = split

    def projected_tokens(self) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """The representation tokens projected to each receiving block: (text, image), block -> (n, width)."""
        if self.plus:
            return ({j: self.to_text(self.rep_tokens, i) for i, j in enumerate(self.blocks)},
                    {j: self.to_image(self.rep_tokens, i) for i, j in enumerate(self.blocks)})
        return ({j: m(self.rep_tokens) for j, m in zip(self.blocks, self.to_text)},
                {j: m(self.rep_tokens) for j, m in zip(self.blocks, self.to_image)})

    def rep_projection(self) -> torch.Tensor:
        """(image width, D): ``proj_rep`` (MMRL), or the frozen projection plus ``proj_A @ proj_B`` (MMRL++)."""
        if self.plus:
            return vit_projection(self.backbone.visual) + self.proj_A @ self.proj_B
        return self.proj_rep

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2D): the class-token feature (frozen projection) and the representation feature (proj_rep) side
        by side, one row per image as the engine's feature contract has it; ``forward`` splits them."""
        _, image_tokens = self.projected_tokens()
        pooled, rep = encode_image_inserted(self.backbone.visual, images, image_tokens, self.mix)
        return torch.cat([pooled, rep @ self.rep_projection().to(rep.dtype)], dim=-1)

    def text_features(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        text_tokens, _ = self.projected_tokens()
        tower = self.backbone.text
        features = encode_in_chunks(
            lambda a, b: encode_text_inserted(tower, self.tokens.assemble(self._no_context, a, b), self.tokens.eot[a:b],
                                              text_tokens, self.mix),
            len(self.classnames), self.text_chunk)
        return F.normalize(features, dim=-1)

    def forward(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None) -> LearnerOutput:
        """Scores by the path ``set_inference_split`` chose (the class-token one while training: the
        representation logits reach the loss through ``extras``). ``features`` are ``encode_images``'s."""
        if features is None:
            if images is None:
                raise ValueError("pass images or features")
            features = self.encode_images(images)
        class_token, rep = (F.normalize(f, dim=-1) for f in features.chunk(2, dim=-1))
        text = self.text_features() if self._fixed_text is None else self._fixed_text
        logits = clip_logits(class_token, text, self.backbone.logit_scale)
        rep_logits = clip_logits(rep, text, self.backbone.logit_scale)
        scores = logits
        if self.split == "base" and not self.training:
            scores = self.alpha * logits + (1 - self.alpha) * rep_logits
        if self.head is not None:  # a plug-in head (mmrl+dept) adjusts the scores of the path chosen above
            scores = self.head.adjust(scores, class_token, self.classnames, self.split)
        return LearnerOutput(logits=scores, image_features=class_token, text_features=text,
                             extras={"class_token_logits": logits, "representation_logits": rep_logits})
