"""Nemesis: penalise the norms of the soft-prompt vectors, uniformly (PUN) or where it helps (PAN).

Follows the official code's semantics (methods.md §7.3): the loss added to the cross-entropy is
λ(e) · [β · PUN + (1 − β) · PAN], where both terms are the weighted position norm
N(a) = Σ_{(k),j} a_j · n_{(k),j} / max(1, #nonzero(a)) (summed, not averaged, over classes for a
class-specific context). PUN weighs every position by ω; PAN weighs by ``scale`` the positions whose
rescaling by τ strictly increased the number of correct predictions on the current batch.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import functional_call
from torch.nn.utils import parametrize

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput, PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer

NORMS = {"L1": 1.0, "L2": 2.0, "Linf": math.inf}
#: the official code's hard-coded PAN scale for Food101 and OxfordPets (methods.md §7.4.6)
FOOD_PETS_SCALE = 50.0
_RANDOM_K = re.compile(r"random(\d+)")


def position_norms(prompt: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Norms of the prompt vectors (last dimension) in fp32: (M,) for (M, W), (K, M) for (K, M, W)."""
    return torch.linalg.vector_norm(prompt.float(), ord=p, dim=-1)


def weighted_norm(norms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """N(a): Σ_{(k),j} a_j n_{(k),j} / max(1, #nonzero(a)); ``norms`` is (M,) or (K, M), ``weights`` (M,)."""
    count = max(1, int(torch.count_nonzero(weights)))
    return (norms * weights).sum() / count


def loss_schedule(epoch: int, max_epochs: int) -> float:
    """λ(e) = 1 − sigmoid(0.2 (e − E/2)) for the 0-indexed epoch e of E: from about 1 down to about 0."""
    return 1.0 - 1.0 / (1.0 + math.exp(-0.2 * (epoch - max_epochs / 2)))


def prompt_latent(learner: PromptLearner) -> tuple[str, torch.Tensor]:
    """The name and value of the context tensor that ``functional_call`` can replace.

    With a parametrization on ``ctx`` (QPrompt) this is the latent tensor, so a corrupted copy passes
    through the parametrization exactly as the trained one does.
    """
    if parametrize.is_parametrized(learner, "ctx"):
        return "parametrizations.ctx.original", learner.parametrizations.ctx.original
    return "ctx", learner.ctx


@dataclass
class NemesisConfig(Options):
    owner = "nemesis"
    beta: float | None = option(None, "1 for PUN, 0 for PAN (the paper's two variants)", required=True)
    omega: float | None = option(None, "the loss weight ω; the paper uses 1, 10 or 20", required=True)
    n_positions: int | str = option(1, "l_N, the positions PAN tests per step, or 'randomK' (K random positions, "
                                       "no accuracy test)")
    tau: float = option(0.001, "PAN's rescale factor τ (0 < τ < 1)")
    norm: Literal["L1", "L2", "Linf"] = option("L2", "the norm of the prompt vectors")
    allow_mixed_beta: bool = option(False, "allow 0 < beta < 1 (mixes PUN and PAN; not in the paper's tables)")
    food_pets_override: bool = option(False, "the official code's Food101/OxfordPets case: PAN scale 50, λ(e) = 1")

    def validate(self) -> None:
        beta, omega, tau, n_positions = self.beta, self.omega, self.tau, self.n_positions
        allow_mixed_beta = self.allow_mixed_beta
        if beta is None:
            raise ConfigError("nemesis.beta is required: 1 for PUN, 0 for PAN (the paper's two variants)")
        if allow_mixed_beta:
            if not 0.0 <= beta <= 1.0:
                raise ConfigError(f"nemesis.beta={beta} must lie in [0, 1]")
        elif beta not in (0, 1):
            raise ConfigError(f"nemesis.beta={beta} is not valid; choose 0 (PAN) or 1 (PUN); values strictly "
                              "between mix the two losses, which is not in the paper's tables: set "
                              "nemesis.allow_mixed_beta=true to allow them")
        if omega is None:
            raise ConfigError("nemesis.omega (the loss weight ω) is required; the paper uses 1, 10 or 20")
        if not omega > 0:
            raise ConfigError(f"nemesis.omega={omega} must be positive")
        if not 0.0 < tau < 1.0:
            raise ConfigError(f"nemesis.tau={tau} must satisfy 0 < tau < 1 (a rescale factor below one)")
        if self.positions()[0] < 1:
            raise ConfigError(f"nemesis.n_positions={n_positions!r} must select at least one position")

    def positions(self) -> tuple[int, bool]:
        """(number of positions, random mode) of ``n_positions``."""
        if isinstance(self.n_positions, str):
            match = _RANDOM_K.fullmatch(self.n_positions)
            if match is None:
                raise ConfigError(f"nemesis.n_positions={self.n_positions!r} is not valid; give an integer l_N "
                                  "or 'randomK' (K random positions, no accuracy test), e.g. 'random2'")
            return int(match.group(1)), True
        return self.n_positions, False


@register_regularizer
class Nemesis(Regularizer):
    """PUN (β = 1) or PAN (β = 0) prompt-norm loss on the context vectors of a learner that leaves the
    image tower frozen (PAN re-scores the batch's fixed image features with rescaled prompts)."""

    name = "nemesis"
    Config = NemesisConfig
    requires = frozenset({Capability.LEARNED_TEXT, Capability.CONTEXT, Capability.FIXED_IMAGE_FEATURES})

    def __init__(self, config: NemesisConfig | None = None, **options):
        super().__init__(config, **options)
        cfg = self.config
        self.count, self.random_mode = cfg.positions()
        self.beta = float(cfg.beta)
        self.omega = float(cfg.omega)
        self.tau = float(cfg.tau)
        self.p = NORMS[cfg.norm]
        self.food_pets_override = cfg.food_pets_override
        self.pan_scale = FOOD_PETS_SCALE if self.food_pets_override else self.omega
        self._rng = random.Random()
        self._weight_sum: torch.Tensor | None = None
        self._steps = 0

    # -- hooks -----------------------------------------------------------------------------
    def setup(self, ctx: TrainContext) -> None:
        n_ctx = ctx.learner.ctx.shape[-2]
        if self.beta < 1 and self.count > n_ctx:
            raise ConfigError(f"nemesis.n_positions asks for {self.count} positions but the prompt has {n_ctx}")
        # seeded from the run's Python random state; its own state travels in state_dict for resume
        self._rng.seed(random.getrandbits(64))
        self._weight_sum = torch.zeros(n_ctx, device="cpu")  # an epoch's log, kept off the device
        self._steps = 0

    def schedule(self, ctx: TrainContext) -> float:
        return 1.0 if self.food_pets_override else loss_schedule(ctx.epoch, ctx.max_epochs)

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        learner = ctx.learner
        weight = self.schedule(ctx)
        losses = {}
        pan_weights = self.pan_weights(learner, batch["features"], batch["labels"]) if self.beta < 1 else None
        device_type = learner.ctx.device.type
        with torch.autocast(device_type=device_type, enabled=False):  # norm losses in fp32
            norms = position_norms(learner.ctx, self.p)
            if self.beta > 0:
                uniform = torch.full((norms.shape[-1],), self.omega, device=norms.device)
                losses["nemesis_pun"] = weight * self.beta * weighted_norm(norms, uniform)
            if pan_weights is not None:
                losses["nemesis_pan"] = weight * (1 - self.beta) * weighted_norm(norms, pan_weights.to(norms.device))
                self._weight_sum += pan_weights.cpu()
        self._steps += 1
        return losses

    @torch.no_grad()
    def pan_weights(self, learner: PromptLearner, image_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The PAN position weights a for this batch (the pre-inference step, without gradient); ``image_features``
        are the batch's as the learner reads them (the frozen tower's, pooled or with region tokens)."""
        key, latent = prompt_latent(learner)
        n_ctx = latent.shape[-2]
        positions = self._rng.sample(range(n_ctx), self.count)
        weights = torch.zeros(n_ctx, device=latent.device)
        if self.random_mode:
            weights[positions] = self.pan_scale
            return weights

        def correct(context: torch.Tensor) -> int:
            out = functional_call(learner, {key: context}, kwargs={"features": image_features.detach()})
            return int((out.logits.argmax(-1) == labels).sum())

        original = correct(latent)
        for p in positions:
            rescaled = latent.detach().clone()
            rescaled[..., p, :] *= self.tau
            if correct(rescaled) > original:
                weights[p] = self.pan_scale
        return weights

    def on_epoch_end(self, ctx: TrainContext) -> dict:
        """Per-position norms (class mean for a class-specific context) and the epoch's mean PAN weights."""
        with torch.no_grad():
            prompt = ctx.learner.ctx
            norms = position_norms(prompt, self.p)
            per_position = norms.mean(0) if norms.dim() > 1 else norms
            frobenius = torch.linalg.vector_norm(prompt.float(), dim=(-2, -1)).mean()
        record = {"nemesis_schedule": self.schedule(ctx), "nemesis_frobenius_norm": float(frobenius)}
        record.update({f"nemesis_norm_{j}": float(v) for j, v in enumerate(per_position)})
        if self.beta < 1:
            mean = self._weight_sum / max(self._steps, 1)
            record.update({f"nemesis_pan_weight_{j}": float(v) for j, v in enumerate(mean)})
            self._weight_sum.zero_()
        self._steps = 0
        return record

    def state_dict(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"rng_version": version, "rng_internal": torch.tensor(internal, dtype=torch.int64),
                "rng_gauss": gauss}

    def load_state_dict(self, state: dict) -> None:
        if state:
            internal = tuple(int(v) for v in state["rng_internal"])
            self._rng.setstate((state["rng_version"], internal, state["rng_gauss"]))
