"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022; gaopengcuhk/Tip-Adapter `main.py`, `utils.py`):
zero-shot CLIP plus a cache model of the few-shot training set.

    keys   F_k = normalize(mean over augmented views of the training images' features)   (NK, D)
    values L   = one-hot labels of the training images                                  (NK, K)
    logits = s * f W^T + alpha * exp(-beta * (1 - f F_k^T)) L

f is the normalised image feature and W the zero-shot classifier. Tip-Adapter trains nothing; Tip-Adapter-F
fine-tunes the keys (an unconstrained linear layer initialised at them). Both choose (alpha, beta) on the
validation split after training, on the official grid; results.json records the choice.

A class list other than the training one keeps the cache entries of the classes it shares (the rest score
by CLIP's term alone), so both serve new classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import check_training_labels, clip_logits
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import ZeroShotCLIP, ZeroShotConfig
from vlprompt.options import option


def search_grid(maximum: float, steps: int) -> list[float]:
    """The official grid: ``steps`` values from 0.1 up, ``(maximum - 0.1) / steps`` apart (``maximum``
    itself is not reached)."""
    return [i * (maximum - 0.1) / steps + 0.1 for i in range(steps)]


def cache_logits(affinity: torch.Tensor, values: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
                 ) -> torch.Tensor:
    """alpha * exp(-beta * (1 - affinity)) @ values: the cache model's share of the logits."""
    return alpha * ((-1) * (beta - beta * affinity)).exp() @ values


@dataclass
class TipAdapterConfig(ZeroShotConfig):
    owner = "tip_adapter"
    alpha: float = option(1.17, "alpha: weight of the cache logits before the search (official init_alpha; "
                                "1.17 for ImageNet and Oxford Pets)")
    beta: float = option(1.0, "beta: sharpness of the affinity before the search (official init_beta)")
    search_scale: list[float] = option(doc="[beta, alpha] upper ends of the validation search (official per dataset; "
                                       "[7, 3] for ImageNet and Oxford Pets); [] searches nothing", factory=lambda: [7.0, 3.0])
    search_step: list[int] = option(doc="[beta, alpha] grid sizes of the validation search (official: [200, 20])",
                                    factory=lambda: [200, 20])

    def validate(self) -> None:
        super().validate()
        if self.beta < 0 or self.alpha < 0:
            raise ConfigError(f"{self.owner}.alpha={self.alpha} and {self.owner}.beta={self.beta} must be "
                              "non-negative")
        if self.search_scale and (len(self.search_scale) != 2 or len(self.search_step) != 2
                                  or min(self.search_step) < 1 or min(self.search_scale) <= 0.1):
            raise ConfigError(f"{self.owner}.search_scale={self.search_scale} and search_step={self.search_step} "
                              "must be [beta, alpha] pairs: scales above 0.1 and at least one step each, e.g. "
                              "search_scale=[7, 3] search_step=[200, 20]; search_scale=[] turns the search off")


@register_learner
class TipAdapter(ZeroShotCLIP):
    """Zero-shot CLIP plus a training-free cache model of the few-shot training features."""

    name = "tip_adapter"
    Config = TipAdapterConfig
    capabilities = frozenset({Capability.FIXED_IMAGE_FEATURES, Capability.NEW_CLASSES, Capability.CACHE_MODEL,
                              Capability.VALIDATION_SEARCH})
    #: Tip-Adapter-F trains the keys
    trains_keys = False

    def __init__(self, backbone: Backbone, classnames: list[str], config: TipAdapterConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        self.cache_classes = list(classnames)  # the classes the cache labels index
        self._set_cache(torch.empty(0, backbone.embed_dim), torch.empty(0, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(float(self.config.alpha)))
        self.register_buffer("beta", torch.tensor(float(self.config.beta)))

    def _set_cache(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        device = self.backbone.device
        if self.trains_keys:
            self.cache_keys = nn.Parameter(keys.float().to(device))
        else:
            self.register_buffer("cache_keys", keys.float().to(device))
        self.register_buffer("cache_labels", labels.long().to(device))
        self.set_classnames(self.classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        super().set_classnames(classnames)
        if not hasattr(self, "cache_labels"):
            return
        column = {name: i for i, name in enumerate(self.classnames)}
        to_new = torch.tensor([column.get(name, -1) for name in self.cache_classes], dtype=torch.long)
        mapped = to_new[self.cache_labels.cpu()] if len(self.cache_labels) else self.cache_labels.cpu()
        values = torch.zeros(len(mapped), len(self.classnames))
        kept = mapped >= 0
        values[kept.nonzero().squeeze(-1), mapped[kept]] = 1.0
        self.register_buffer("cache_values", values.to(self.backbone.device), persistent=False)

    def fitted_tensors(self) -> dict[str, torch.Tensor]:
        fitted = {"cache_labels": self.cache_labels, "alpha": self.alpha, "beta": self.beta}
        return fitted if self.trains_keys else {"cache_keys": self.cache_keys, **fitted}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A saved cache has its own size: take it before the values are copied in."""
        keys, labels = state_dict.get(prefix + "cache_keys"), state_dict.get(prefix + "cache_labels")
        if keys is not None and labels is not None and keys.dim() == 2 and keys.shape[1] == self.backbone.embed_dim:
            self._set_cache(torch.empty_like(keys, device="cpu"), torch.zeros(len(labels), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.set_classnames(self.classnames)

    @torch.no_grad()
    def build_from_training_set(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keys: the mean of each image's views, normalised (the official cache of its augmented passes)."""
        check_training_labels(self.name, labels, len(self.cache_classes))
        self.classnames = list(self.cache_classes)
        self._set_cache(F.normalize(features.float().mean(0), dim=-1), labels)

    def affinity(self, image_features: torch.Tensor) -> torch.Tensor:
        return image_features.float() @ self.cache_keys.t()

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        clip = clip_logits(image_features, text_features, self.backbone.logit_scale)
        return clip + cache_logits(self.affinity(image_features), self.cache_values, self.alpha, self.beta)

    @torch.no_grad()
    def select_on_validation(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """The official search: the (beta, alpha) of the grid with the best validation accuracy, the first
        such pair in grid order (beta outer, alpha inner), kept only if it beats 0 (as the official code)."""
        if not self.config.search_scale:
            return {}
        image = F.normalize(features.float().to(self.backbone.device), dim=-1)
        labels = labels.to(self.backbone.device)
        clip = clip_logits(image, self.text_features(), self.backbone.logit_scale)
        affinity = self.affinity(image)
        best_accuracy, best = 0.0, (0.0, 0.0)
        for beta in search_grid(self.config.search_scale[0], self.config.search_step[0]):
            cache = ((-1) * (beta - beta * affinity)).exp() @ self.cache_values  # once per beta
            for alpha in search_grid(self.config.search_scale[1], self.config.search_step[1]):
                logits = clip + cache * alpha
                accuracy = 100.0 * float((logits.argmax(-1) == labels).float().mean())
                if accuracy > best_accuracy:
                    best_accuracy, best = accuracy, (beta, alpha)
        self.beta.fill_(best[0])
        self.alpha.fill_(best[1])
        return {"beta": best[0], "alpha": best[1], "validation_accuracy": best_accuracy}


@dataclass
class TipAdapterFConfig(TipAdapterConfig):
    owner = "tip_adapter_f"


@register_learner
class TipAdapterF(TipAdapter):
    """Tip-Adapter with its cache keys fine-tuned (an unconstrained linear layer initialised at the keys)."""

    name = "tip_adapter_f"
    Config = TipAdapterFConfig
    capabilities = TipAdapter.capabilities | {Capability.LEARNED_PROMPTS}
    trains_keys = True
