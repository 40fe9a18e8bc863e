"""Neural-collapse metrics of image and text features (methods.md §10.5).

These are the standard definitions of Papyan et al. (2020), used as NPT's analysis measures; NPT's
exact formulas are not public. Lower is more collapsed for every metric.
- nc1: tr(Sigma_W Sigma_B^+) / K of the normalised image features;
- equinorm: std / mean of the centred class-mean norms (image) or centred text-feature norms;
- equiangularity: mean over pairs of |cos + 1/(K-1)| of those centred vectors;
- self_duality (NC3): ||W~ - M~||_F^2, W~ and M~ the centred, Frobenius-normalised text features and
  image class means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def equinorm(vectors: torch.Tensor) -> float:
    norms = vectors.norm(dim=-1)
    return float(norms.std(unbiased=False) / norms.mean())


def equiangularity(vectors: torch.Tensor) -> float:
    k = vectors.shape[0]
    unit = F.normalize(vectors, dim=-1)
    cos = unit @ unit.t()
    off = ~torch.eye(k, dtype=torch.bool)
    return float((cos[off] + 1.0 / (k - 1)).abs().mean())


@torch.no_grad()
def neural_collapse_metrics(image_features: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor) -> dict:
    """Metrics for features (N, D), labels (N,) in [0, K) and class text features (K, D).

    Image metrics use the classes present in ``labels``; self-duality needs all K of them.
    """
    h = F.normalize(image_features.double(), dim=-1)
    w = F.normalize(text_features.double(), dim=-1)
    classes = labels.unique()  # sorted
    means = torch.stack([h[labels == c].mean(0) for c in classes])
    centred = means - h.mean(0)
    within = h - means[torch.searchsorted(classes, labels)]
    sigma_w = within.t() @ within / len(h)
    sigma_b = centred.t() @ centred / len(classes)
    w_centred = w - w.mean(0)
    metrics = {
        "nc1": float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / len(classes)),
        "image_equinorm": equinorm(centred),
        "image_equiangularity": equiangularity(centred),
        "text_equinorm": equinorm(w_centred),
        "text_equiangularity": equiangularity(w_centred),
    }
    if len(classes) == w.shape[0]:
        metrics["self_duality"] = float(((w_centred / w_centred.norm() - centred / centred.norm()) ** 2).sum())
    return metrics
