"""LP++ (Huang, Shakeri, Dolz, Boudiaf, Bekkouch and Ben Ayed, CVPR 2024; FereshteShakeri/FewShot-CLIP-Strong-Baseline
`methods/linear_probe_p2.py`): a linear probe blended class by class with zero-shot CLIP's text scores, whose
step sizes come from the data instead of a validation search.

    logits = f W^T + b + alpha * (f T^T)      f normalised, T the zero-shot classifier (K, D), alpha (K,)

Full-batch training as the official code: W starts at the sum of each class' features, b as a fresh
linear layer's bias; W and b take SGD (momentum 0.9) steps of 4N / lambda_max(F^T F); every 10th epoch
alpha takes a plain step of N / (4 max_k sum_i (f_i . t_k)^2) along its gradient, which the official code
never resets, so each step uses the sum of every epoch's gradient so far. alpha starts at 250 times the mean over
classes of the class-mean text score of the images' own class. The epoch kept is the last one with the best validation
accuracy (the official `>=`); the run trains at its validation stage, where those scores exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import check_training_labels
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import ZeroShotCLIP, ZeroShotConfig
from vlprompt.options import option


@dataclass
class LPPConfig(ZeroShotConfig):
    owner = "lpp"
    epochs: int = option(300, "full-batch epochs (the official train_epoch: 300)")
    alpha_every: int = option(10, "epochs between two steps of alpha (official: 10)")

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1 or self.alpha_every < 1:
            raise ConfigError(f"lpp.epochs={self.epochs} and lpp.alpha_every={self.alpha_every} must be at least 1")


def class_means(values: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(K, C) mean of ``values`` (N, C) over each class' samples."""
    onehot = F.one_hot(labels, classes).to(values.dtype)
    return (onehot.t() @ values) / onehot.sum(0)[:, None]


@register_learner
class LPP(ZeroShotCLIP):
    """A linear probe plus class-wise blended zero-shot scores, with data-driven step sizes."""

    name = "lpp"
    Config = LPPConfig
    capabilities = frozenset({Capability.FIXED_IMAGE_FEATURES, Capability.CACHE_MODEL, Capability.VALIDATION_SEARCH})

    def __init__(self, backbone: Backbone, classnames: list[str], config: LPPConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        k, d = len(classnames), backbone.embed_dim
        self.register_buffer("weight", torch.zeros(k, d))
        self.register_buffer("bias", torch.zeros(k))
        self.register_buffer("alpha", torch.zeros(k))
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_classnames(self, classnames: list[str]) -> None:
        super().set_classnames(classnames)
        self.follow_class_order(classnames, "LP++")

    def fitted_tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, "bias": self.bias, "alpha": self.alpha}

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        f = image_features.float()
        order = self.order
        return f @ self.weight[order].t() + self.bias[order] + self.alpha[order] * (f @ text_features.float().t())

    @torch.no_grad()
    def build_from_training_set(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the normalised training features (the first view: the official code encodes one pass);
        training waits for the validation features, which choose its epoch."""
        check_training_labels(self.name, labels, len(self.trained_classes))
        self._train = (F.normalize(features[0].float(), dim=-1).to(self.weight.device), labels.to(self.weight.device))

    def select_on_validation(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Train, keeping the last epoch with the best validation accuracy."""
        if self._train is None:
            raise ConfigError("lpp: give it the training features (build_from_training_set) before training")
        return self._fit(F.normalize(features.float(), dim=-1).to(self.weight.device), labels.to(self.weight.device))

    def _fit(self, val: torch.Tensor, val_labels: torch.Tensor) -> dict:
        feats, labels = self._train
        n, k = len(feats), len(self.trained_classes)
        text = self._features[torch.argsort(self.order)].float()  # (K, D) in the trained order
        layer = nn.Linear(feats.shape[1], k).to(feats.device)  # the official fresh layer: its bias is the start
        with torch.no_grad():
            layer.weight.copy_(F.one_hot(labels, k).float().t() @ feats)  # class sums
            text_scores = feats @ text.t()
            own = text_scores.gather(1, labels[:, None])[:, 0]  # each image's score for its own class
            alpha = (250.0 * class_means(own[:, None], labels, k)).mean() * torch.ones(k, device=feats.device)
            lr_w = 4 * n / float(torch.linalg.eigvalsh((feats.t() @ feats).double()).max())
            lr_alpha = n / (4 * float(text_scores.pow(2).sum(0).max()))
        alpha.requires_grad_(True)
        optimizer = torch.optim.SGD(layer.parameters(), lr_w, momentum=0.9)
        best = None
        for epoch in range(self.config.epochs):
            loss = F.cross_entropy(layer(feats) + alpha * text_scores, labels)
            optimizer.zero_grad()
            loss.backward()  # alpha's gradient accumulates: the official code never resets it
            optimizer.step()
            if (epoch + 1) % self.config.alpha_every == 0:
                with torch.no_grad():
                    alpha -= lr_alpha * alpha.grad
            with torch.no_grad():
                accuracy = 100.0 * float(((layer(val) + alpha * (val @ text.t())).argmax(-1) == val_labels)
                                         .float().mean())
            if best is None or accuracy >= best[0]:
                best = (accuracy, epoch + 1, layer.weight.detach().clone(), layer.bias.detach().clone(),
                        alpha.detach().clone())
        with torch.no_grad():
            self.weight.copy_(best[2])
            self.bias.copy_(best[3])
            self.alpha.copy_(best[4])
        return {"epoch": best[1], "validation_accuracy": best[0], "lr_w": lr_w, "lr_alpha": lr_alpha}
