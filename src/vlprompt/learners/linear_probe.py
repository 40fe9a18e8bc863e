"""Linear-probe CLIP as the CoOp paper runs it (KaiyangZhou/CoOp `lpclip/linear_probe.py`): multinomial
logistic regression on the frozen image tower's unnormalised features, its L2 strength C chosen on the
few-shot validation split by a coarse sweep and a binary search on log10(C).

    logits = f W^T + b        (scikit-learn's LogisticRegression, lbfgs, 1000 iterations)

The probe is fitted, not trained by SGD: the run hands it the cached training features
(capability `cache_model`), and the validation stage searches C and refits (`validation_search`).
It scores only its own classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import PromptLearner, check_training_labels
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import register_learner
from vlprompt.options import Options, option

#: the coarse sweep of CoOp's script, before its binary search
COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@dataclass
class LinearProbeConfig(Options):
    owner = "linear_probe"
    c: float = option(1.0, "inverse L2 strength C of the fit before the validation search (and without one)")
    search_steps: int = option(8, "binary-search steps on log10(C) after the coarse sweep (CoOp's num_step: 8); "
                                  "0: no search, C stays as given")
    max_iter: int = option(1000, "lbfgs iterations per fit (CoOp: 1000)")

    def validate(self) -> None:
        if not self.c > 0:
            raise ConfigError(f"linear_probe.c={self.c} must be positive")
        if self.search_steps < 0 or self.max_iter < 1:
            raise ConfigError(f"linear_probe.search_steps={self.search_steps} must be at least 0 and "
                              f"linear_probe.max_iter={self.max_iter} at least 1")


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int):
    """scikit-learn's multinomial logistic regression, as CoOp's script calls it."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(solver="lbfgs", max_iter=max_iter, C=c).fit(features, labels)


def validation_accuracy(model, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(model.predict(features) == labels))


def search_c(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], steps: int,
             max_iter: int) -> tuple[float, list[dict]]:
    """CoOp's search: the best C of the coarse sweep (the first on ties), then ``steps`` rounds that fit
    both ends of [C/10, 10 C] and keep the better one (the left on ties), halving the log-range toward it.
    Returns the final C and every fit tried."""
    tried = []

    def score(c: float) -> float:
        accuracy = validation_accuracy(fit_logistic_regression(*train, c, max_iter), *val)
        tried.append({"c": c, "validation_accuracy": 100.0 * accuracy})
        return accuracy

    coarse = [score(c) for c in COARSE_C]
    peak = COARSE_C[int(np.argmax(coarse))]
    left, right, chosen = peak / 10, peak * 10, peak
    for _ in range(steps):
        if score(left) < score(right):
            chosen = right
            left, right = 10 ** (0.5 * (math.log10(right) + math.log10(left))), right
        else:
            chosen = left
            left, right = left, 10 ** (0.5 * (math.log10(right) + math.log10(left)))
    return chosen, tried


@register_learner
class LinearProbe(PromptLearner):
    """Logistic regression on the frozen image features, C chosen on the validation split."""

    name = "linear_probe"
    Config = LinearProbeConfig
    capabilities = frozenset({Capability.FIXED_IMAGE_FEATURES, Capability.CACHE_MODEL, Capability.VALIDATION_SEARCH})

    def __init__(self, backbone: Backbone, classnames: list[str], config: LinearProbeConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        self.register_buffer("weight", torch.zeros(len(classnames), backbone.embed_dim))
        self.register_buffer("bias", torch.zeros(len(classnames)))
        self.register_buffer("c", torch.tensor(float(self.config.c)))
        self.set_classnames(classnames)
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def set_classnames(self, classnames: list[str]) -> None:
        """The same classes in another order reorder the rows; other classes are refused."""
        self.follow_class_order(classnames, "a linear probe")

    def fitted_tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, "bias": self.bias, "c": self.c}

    def _fit(self, c: float) -> None:
        model = fit_logistic_regression(*self._train, c, self.config.max_iter)
        coef, intercept = torch.from_numpy(model.coef_).float(), torch.from_numpy(model.intercept_).float()
        if len(self.trained_classes) == 2:  # scikit-learn keeps one row for two classes: logit of class 1
            coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), intercept])
        self.weight.copy_(coef)
        self.bias.copy_(intercept)
        self.c.fill_(c)

    @torch.no_grad()
    def build_from_training_set(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Every cached view of every image is a sample (CoOp's features are one un-augmented view)."""
        views = features.shape[0]
        self._train = (features.float().reshape(-1, features.shape[-1]).cpu().numpy().astype(np.float64),
                       labels.repeat(views).cpu().numpy())
        check_training_labels(self.name, labels, len(self.trained_classes))
        self._fit(self.config.c)

    @torch.no_grad()
    def select_on_validation(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        if self.config.search_steps == 0:
            return {}
        if self._train is None:
            raise ConfigError("linear_probe: fit it on the training features before the validation search")
        val = (features.float().cpu().numpy().astype(np.float64), labels.cpu().numpy())
        c, tried = search_c(self._train, val, self.config.search_steps, self.config.max_iter)
        self._fit(c)
        return {"c": c, "validation_accuracy": next(t["validation_accuracy"] for t in reversed(tried)
                                                    if t["c"] == c), "fits": len(tried)}

    def adapt_image_features(self, features: torch.Tensor) -> torch.Tensor:
        return features.float()  # logistic regression on the tower's output, as CoOp's script fits it

    def text_features(self, image_features=None) -> torch.Tensor:
        """The class weights W (K, D), rows in the current class order (not normalised)."""
        return self.weight[self.order]

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return image_features @ text_features.t() + self.bias[self.order]
