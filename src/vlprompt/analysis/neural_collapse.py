"""Neural-collapse metrics of image and text features (methods.md §10.5), NPT's analysis measures.

These are the standard definitions of Papyan, Han and Donoho (2020), as in their reference code;
NPT's exact formulas are not public. Image features are L2-normalised first; mu_k are the class means
of the classes present, mu_G the mean of all samples, W the normalised text features. Lower is more
collapsed for every metric, 0 being exact collapse:
- nc1: tr(Sigma_W Sigma_B^+) / K (within-class variability relative to between-class);
- image_equinorm: std_k / mean_k of ||mu_k - mu_G|| (std with Bessel's correction, as Papyan's code);
- image_equiangularity: mean over pairs k != j of |cos(mu_k - mu_G, mu_j - mu_G) + 1/(K-1)|;
- text_equinorm, text_equiangularity: the same two on the text features centred by their mean
  (normalised text features would otherwise have trivially equal norms);
- self_duality (NC3): ||W~ - M~||_F^2, W~ and M~ the centred, Frobenius-normalised text features and
  image class means, over the classes present.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: singular values below this fraction of the largest are dropped by the pseudo-inverse (Papyan's rcond)
PINV_RTOL = 1e-6


def equinorm(vectors: torch.Tensor) -> float:
    """Coefficient of variation of the vectors' norms."""
    norms = vectors.norm(dim=-1)
    return float(norms.std() / norms.mean())


def equiangularity(vectors: torch.Tensor) -> float:
    """Mean absolute deviation of the pairwise cosines from the simplex ETF's -1/(K-1)."""
    k = vectors.shape[0]
    unit = F.normalize(vectors, dim=-1)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=vectors.device)
    return float(((unit @ unit.t())[off_diagonal] + 1.0 / (k - 1)).abs().mean())


@torch.no_grad()
def neural_collapse_metrics(image_features: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor) -> dict:
    """NC metrics of image features (N, D), labels (N,) in [0, K) and class text features (K, D)."""
    k = text_features.shape[0]
    if image_features.dim() != 2 or text_features.dim() != 2 or image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"expected image features (N, D) and text features (K, D); got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if labels.shape != (image_features.shape[0],) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"expected {image_features.shape[0]} labels in [0, {k}); got shape {tuple(labels.shape)} "
                         f"with range [{int(labels.min())}, {int(labels.max())}]")
    classes = labels.unique()  # sorted
    if len(classes) < 2:
        raise ValueError("neural-collapse metrics need samples of at least 2 classes")
    h = F.normalize(image_features.double(), dim=-1)
    w = F.normalize(text_features.double(), dim=-1)
    means = torch.stack([h[labels == c].mean(0) for c in classes])
    centred = means - h.mean(0)
    within = h - means[torch.searchsorted(classes, labels)]
    sigma_w = within.t() @ within / len(h)
    sigma_b = centred.t() @ centred / len(classes)
    w_centred = w - w.mean(0)
    w_present = w[classes] - w[classes].mean(0)
    duality_gap = w_present / w_present.norm() - centred / centred.norm()
    return {
        "nc1": float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, rtol=PINV_RTOL, hermitian=True)) / len(classes)),
        "image_equinorm": equinorm(centred),
        "image_equiangularity": equiangularity(centred),
        "text_equinorm": equinorm(w_centred),
        "text_equiangularity": equiangularity(w_centred),
        "self_duality": float((duality_gap**2).sum()),
    }
