"""NPT (methods.md §10): pull text and image features towards one simplex equiangular tight frame.

NPT's formulas are not public; everything here is the documented reconstruction of §10.3, each
choice an option:
- language-modality collapse L_lmc: by default the Gram form ||T T^T - G_ETF||_F^2 / K^2, where T
  holds the normalised class text features and G_ETF has ones on the diagonal and -1/(K-1) elsewhere
  (no anchor matrix needed, defined for any K); or "anchor" (mean 1 - <t_k, m_k>) or
  "dot_regression" (mean (<t_k, m_k> - 1)^2 / 2) against a seeded simplex ETF m;
- multi-modality isomorphism L_mmi: by default the class-balanced mean of ||f_i - t_{y_i}||^2 (image
  features pulled to their class's text feature); or "anchor" (to the ETF anchor), which needs a
  trainable image tower;
- total L = CE + lambda_lmc L_lmc + lambda_mmi L_mmi, both weights required (the paper's are unknown).
Per-image text features (CoCoOp) give one L_lmc per image, averaged, and each image is pulled to its
own prompts' feature of its class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer


def etf_gram(k: int) -> torch.Tensor:
    """Gram matrix of a K-vector simplex ETF: 1 on the diagonal, -1/(K-1) off it."""
    return torch.full((k, k), -1.0 / (k - 1)).fill_diagonal_(1.0)


def simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(K, dim) unit vectors with pairwise cosine -1/(K-1), in a seeded random orientation.

    The K centred, rescaled basis vectors of R^K form a simplex ETF inside the (K-1)-dimensional
    subspace orthogonal to the all-ones vector; they are written in an orthonormal basis of that
    subspace and then mapped into R^dim by a seeded random isometry, so dim >= K - 1 suffices.
    """
    k = num_classes
    if k < 2:
        raise ConfigError(f"a simplex ETF needs at least 2 classes, got {k}")
    if k - 1 > dim:
        raise ConfigError(
            f"a simplex ETF of K={k} classes needs feature dimension d >= K-1={k - 1}, but d={dim}; use the "
            "anchor-free forms npt.lmc_form='gram' and npt.mmi_form='text', which are defined for any K"
        )
    centred = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)  # columns: the ETF in R^K
    basis = torch.linalg.svd(centred).U[:, : k - 1]  # orthonormal basis of its (K-1)-dim span
    g = torch.Generator().manual_seed(seed)
    isometry, _ = torch.linalg.qr(torch.randn(dim, k - 1, generator=g, dtype=torch.float64))
    return (isometry @ basis.t() @ centred).t().float().contiguous()


def procrustes_align(anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rotate the anchors (K, D) by the orthogonal map Q minimising ||anchors Q - targets||_F."""
    u, _, vh = torch.linalg.svd(anchors.t().double() @ targets.double())
    return (anchors.double() @ (u @ vh)).to(anchors.dtype)


def lmc_loss(text: torch.Tensor, form: str, anchors: torch.Tensor | None = None) -> torch.Tensor:
    """Language-modality collapse of normalised text features (K, D) or per image (B, K, D)."""
    k = text.shape[-2]
    if form == "gram":
        gram = text @ text.transpose(-1, -2)
        return ((gram - etf_gram(k).to(text)) ** 2).sum((-1, -2)).mean() / k**2
    agreement = (text * anchors).sum(-1)
    if form == "anchor":
        return (1 - agreement).mean()
    return 0.5 * ((agreement - 1) ** 2).mean()


def mmi_loss(image: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/K') sum over the K' classes in the batch of the class mean of ||f_i - target_i||^2.

    ``targets`` is (K, D), indexed by label, or (B, K, D): each image's own class features.
    """
    rows = torch.arange(len(labels), device=labels.device)
    target = targets[rows, labels] if targets.dim() == 3 else targets[labels]
    per_sample = ((image - target) ** 2).sum(-1)
    k = targets.shape[-2]
    counts = torch.bincount(labels, minlength=k)
    sums = torch.zeros(k, dtype=per_sample.dtype, device=per_sample.device).index_add(0, labels, per_sample)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


@dataclass
class NPTConfig(Options):
    owner = "npt"
    lambda_lmc: float | None = option(None, "weight of the language-modality collapse loss (not published)",
                                      required=True)
    lambda_mmi: float | None = option(None, "weight of the multi-modality isomorphism loss (not published)",
                                      required=True)
    lmc_form: Literal["gram", "anchor", "dot_regression"] = option("gram", "form of L_lmc (methods.md §10.3.3)")
    mmi_form: Literal["text", "anchor"] = option(
        "text", "L_mmi's target: the class's text feature, or its ETF anchor (needs a prompted image tower)")
    anchor_seed: int = option(0, "seed of the ETF anchors' orientation")
    align: bool = option(False, "rotate the ETF anchors onto the zero-shot text features (Procrustes)")

    def validate(self) -> None:
        if self.lambda_lmc is None or self.lambda_mmi is None:
            raise ConfigError("npt needs lambda_lmc and lambda_mmi: the paper's weights are not published "
                              "(methods.md §10.3.5), so every run must state its own")
        for name, value in (("lambda_lmc", self.lambda_lmc), ("lambda_mmi", self.lambda_mmi)):
            if value < 0:
                raise ConfigError(f"npt.{name}={value} must be non-negative")
        if self.align and not self.uses_anchors:
            raise ConfigError("npt.align=true rotates the ETF anchors, which only the anchor forms use "
                              "(lmc_form='anchor' or 'dot_regression', or mmi_form='anchor')")

    @property
    def uses_anchors(self) -> bool:
        return self.lmc_form != "gram" or self.mmi_form == "anchor"


@register_regularizer
class NPT(Regularizer):
    name = "npt"
    Config = NPTConfig
    requires = frozenset({Capability.LEARNED_TEXT})

    @classmethod
    def requirements(cls, config: NPTConfig) -> frozenset[Capability]:
        """Pulling image features to fixed anchors (mmi_form='anchor') needs image features that train."""
        if config.mmi_form == "anchor":
            return cls.requires | {Capability.PROMPTED_IMAGE_TOWER}
        return cls.requires

    def __init__(self, config: NPTConfig | None = None, **options):
        super().__init__(config, **options)
        cfg = self.config
        self.lambda_lmc, self.lambda_mmi = cfg.lambda_lmc, cfg.lambda_mmi
        self.lmc_form, self.mmi_form = cfg.lmc_form, cfg.mmi_form
        self.anchor_seed, self.align = cfg.anchor_seed, cfg.align
        self.uses_anchors = cfg.uses_anchors
        self.anchors: torch.Tensor | None = None

    def setup(self, ctx: TrainContext) -> None:
        """Build the ETF anchors of the training classes (anchor forms only), optionally aligned."""
        if self.uses_anchors:
            anchors = simplex_etf(len(ctx.learner.classnames), ctx.learner.backbone.embed_dim, self.anchor_seed)
            if self.align:
                anchors = procrustes_align(anchors, ctx.zero_shot_text_features())
            self.anchors = anchors

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        text = outputs.text_features.float()
        anchors = None if self.anchors is None else self.anchors.to(text.device)
        targets = text if self.mmi_form == "text" else anchors
        return {
            "npt_lmc": self.lambda_lmc * lmc_loss(text, self.lmc_form, anchors),
            "npt_mmi": self.lambda_mmi * mmi_loss(outputs.image_features.float(), batch["labels"], targets),
        }
