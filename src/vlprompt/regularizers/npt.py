"""NPT (methods.md §10): pull text and image features towards one simplex equiangular tight frame.

NPT's formulas are not public; everything here is the documented reconstruction of §10.3, each
choice an option:
- language-modality collapse L_lmc: by default the Gram form ||T^T T - G_ETF||_F^2 / K^2, where T
  holds the normalised class text features and G_ETF has ones on the diagonal and -1/(K-1) elsewhere
  (no anchor matrix needed, defined for any K); or "anchor" (mean 1 - <t_k, m_k>) or
  "dot_regression" (mean (<t_k, m_k> - 1)^2 / 2) against a seeded simplex ETF m;
- multi-modality isomorphism L_mmi: by default the class-balanced mean of ||f_i - t_{y_i}||^2 (image
  features pulled to their class's text feature); or "anchor" (to the ETF anchor), which needs a
  trainable image tower;
- total L = CE + lambda_lmc L_lmc + lambda_mmi L_mmi, both weights required (the paper's are unknown).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.base import LearnerOutput, PromptLearner
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register

LMC_FORMS = ("gram", "anchor", "dot_regression")
MMI_FORMS = ("text", "anchor")


def etf_gram(k: int) -> torch.Tensor:
    """Gram matrix of a K-vector simplex ETF: 1 on the diagonal, -1/(K-1) off it."""
    return torch.full((k, k), -1.0 / (k - 1)).fill_diagonal_(1.0)


def simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(K, dim) unit vectors with pairwise cosine -1/(K-1), in a seeded random orientation."""
    k = num_classes
    if k < 2:
        raise ConfigError("a simplex ETF needs at least 2 classes")
    if k - 1 > dim:
        raise ConfigError(f"a simplex ETF of {k} classes needs dimension >= {k - 1}, the features have {dim}; "
                          "use npt.lmc_form='gram', which is defined for any number of classes")
    centred = math.sqrt(k / (k - 1)) * (torch.eye(k) - torch.full((k, k), 1.0 / k))  # rank K-1, columns = ETF
    basis = torch.linalg.svd(centred).U[:, : k - 1]  # orthonormal basis of the span (orthogonal to 1)
    coords = basis.t() @ centred  # (K-1, K)
    g = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(dim, k - 1, generator=g, dtype=torch.float64))
    return (rotation.float() @ coords).t().contiguous()


def procrustes_align(anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rotate the anchors (K, D) by the orthogonal map that best matches them to targets (K, D)."""
    u, _, vh = torch.linalg.svd(targets.t() @ anchors)
    return anchors @ (u @ vh).t()


def lmc_loss(text: torch.Tensor, form: str, anchors: torch.Tensor | None = None) -> torch.Tensor:
    k = text.shape[0]
    if form == "gram":
        return ((text @ text.t() - etf_gram(k).to(text)) ** 2).sum() / k**2
    agreement = (text * anchors).sum(-1)
    if form == "anchor":
        return (1 - agreement).mean()
    return 0.5 * ((agreement - 1) ** 2).mean()


def mmi_loss(image: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/K') sum over classes present of the class mean of ||f_i - target_{y_i}||^2."""
    per_sample = ((image - targets[labels]) ** 2).sum(-1)
    classes = labels.unique()
    return torch.stack([per_sample[labels == c].mean() for c in classes]).mean()


@register
class NPT(Regularizer):
    name = "npt"
    applies_to = ("coop", "cocoop", "maple")

    def __init__(self, lambda_lmc: float | None = None, lambda_mmi: float | None = None, lmc_form: str = "gram",
                 mmi_form: str = "text", anchor_seed: int = 0, align: bool = False):
        if lambda_lmc is None or lambda_mmi is None:
            raise ConfigError("npt needs lambda_lmc and lambda_mmi: the paper's weights are not published "
                              "(methods.md §10.3.5), so every run must state its own")
        check_choice("npt.lmc_form", lmc_form, LMC_FORMS)
        check_choice("npt.mmi_form", mmi_form, MMI_FORMS)
        self.lambda_lmc, self.lambda_mmi = lambda_lmc, lambda_mmi
        self.lmc_form, self.mmi_form = lmc_form, mmi_form
        self.anchor_seed, self.align = anchor_seed, align
        self.anchors: torch.Tensor | None = None

    def check(self, learner: PromptLearner) -> None:
        super().check(learner)
        if self.mmi_form == "anchor" and not learner.uses_image_tower:
            raise ConfigError(f"npt.mmi_form='anchor' pulls image features to fixed anchors, but learner "
                              f"{learner.name!r} keeps the image tower frozen, so that loss has no gradient; "
                              "use mmi_form='text'")

    def setup(self, ctx: TrainContext) -> None:
        if self.lmc_form != "gram" or self.mmi_form == "anchor":
            k, dim = len(ctx.learner.classnames), ctx.learner.backbone.embed_dim
            anchors = simplex_etf(k, dim, self.anchor_seed)
            if self.align:
                anchors = procrustes_align(anchors, ctx.zero_shot_text_features())
            self.anchors = anchors

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        text = outputs.text_features.float()
        if text.dim() == 3:  # per-image prompts: the batch's mean class features
            text = F.normalize(text.mean(0), dim=-1)
        image = outputs.image_features.float()
        targets = text if self.mmi_form == "text" else self.anchors
        return {
            "npt_lmc": self.lambda_lmc * lmc_loss(text, self.lmc_form, self.anchors),
            "npt_mmi": self.lambda_mmi * mmi_loss(image, batch["labels"], targets),
        }
