"""Entropic optimal transport between an image's features and a class's prompt features (PLOT's score).

PLOT (Chen et al., ICLR 2023) scores an image against a class by the transport-weighted similarity of
two sets: M image features and N prompt features, with uniform marginals, cost 1 - cosine similarity
and a plan from Sinkhorn's iterations. The plan is a constant for the gradient, as in the official
code; only the similarities carry gradient to the prompts.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def sinkhorn_plan(cost: torch.Tensor, eps: float, max_iters: int, tol: float) -> torch.Tensor:
    """Transport plans (P, M, N) for P cost matrices (P, M, N) with uniform marginals 1/M and 1/N.

    Sinkhorn's scaling r = a / (K c), c = b / (K^T r) with K = exp(-cost / eps), stopped when the mean
    change of r over all P problems falls below ``tol`` (one criterion for the whole batch, as PLOT's
    code has it, so a problem's plan can depend on the others in its batch by up to that tolerance).
    """
    problems, m, n = cost.shape
    kernel = torch.exp(-cost / eps)
    kernel_t = kernel.transpose(1, 2).contiguous()  # contiguous, as the reference: 3x faster products
    a = torch.full((problems, m), 1.0 / m, dtype=cost.dtype, device=cost.device)
    b = torch.full((problems, n), 1.0 / n, dtype=cost.dtype, device=cost.device)
    r, c = torch.ones_like(a), torch.ones_like(b)
    for _ in range(max_iters):
        previous = r
        r = a / torch.matmul(kernel, c.unsqueeze(-1)).squeeze(-1)
        c = b / torch.matmul(kernel_t, r.unsqueeze(-1)).squeeze(-1)
        if (r - previous).abs().mean().item() < tol:
            break
    return torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * kernel


def transport_similarity(image_tokens: torch.Tensor, prompts: torch.Tensor, eps: float, max_iters: int,
                         tol: float) -> torch.Tensor:
    """(B, K) transport-weighted cosine similarity of each image's M features (B, M, D) with each class's
    N prompt features (N, K, D), both normalised: Σ_mn T_mn <f_m, g_n> under the Sinkhorn plan T."""
    batch, m, _ = image_tokens.shape
    n, classes, _ = prompts.shape
    sim = torch.einsum("bmd,nkd->bkmn", image_tokens.float(), prompts.float()).reshape(batch * classes, m, n)
    plan = sinkhorn_plan(1.0 - sim, eps, max_iters, tol)
    if not torch.isfinite(plan).all():  # PLOT's code returns no logits here and its step fails
        raise FloatingPointError(f"the Sinkhorn plan holds NaN or infinite values (eps={eps}); check the features "
                                 "for NaN, or use a larger plot.sinkhorn_eps")
    return (plan * sim).sum(dim=(1, 2)).reshape(batch, classes)
