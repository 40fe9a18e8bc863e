"""Evaluation: top-1 accuracy, macro-F1 and per-class accuracy (as Dassl's classification evaluator)."""

from __future__ import annotations

import torch

from vlprompt.data.feature_cache import feature_shape
from vlprompt.data.loading import RecordImages, chunks, load_batches
from vlprompt.data.transforms import eval_transform
from vlprompt.engine.precision import autocast
from vlprompt.learners.base import PromptLearner
from vlprompt.progress import Progress


def classification_metrics(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, macro-F1 (mean over classes present in labels or predictions) and per-class accuracy, in %."""
    pred, labels = pred.long().cpu(), labels.long().cpu()
    per_class = {}
    f1s = []
    for k in range(num_classes):
        tp = int(((pred == k) & (labels == k)).sum())
        n_true, n_pred = int((labels == k).sum()), int((pred == k).sum())
        if n_true:
            per_class[k] = 100.0 * tp / n_true
        if n_true or n_pred:
            f1s.append(2 * tp / (n_true + n_pred))
    return {
        "accuracy": 100.0 * float((pred == labels).float().mean()) if len(labels) else 0.0,
        "macro_f1": 100.0 * sum(f1s) / len(f1s) if f1s else 0.0,
        "per_class_accuracy": per_class,
        "num_samples": len(labels),
    }


@torch.no_grad()
def predict_logits(learner: PromptLearner, features: torch.Tensor, batch_size: int = 100,
                   precision: str = "fp32", desc: str = "evaluate") -> torch.Tensor:
    """Logits for the image tower's (unnormalised) features, in batches, through the learner's own
    forward; class text features that do not depend on the image are computed once."""
    if features.dim() != (3 if learner.uses_image_tokens else 2):
        shape = "(N, 1 + R, D)" if learner.uses_image_tokens else "(N, D)"
        raise ValueError(f"expected features of shape {shape}, got {tuple(features.shape)}")
    learner.eval()
    out = []
    with autocast(precision, learner.backbone.device), learner.fixed_classifier():
        for start in Progress(range(0, len(features), batch_size), desc, unit="batch", log_every=0.25):
            chunk = features[start : start + batch_size].to(learner.backbone.device, non_blocking=True)
            out.append(learner(features=chunk).logits.float())
    return torch.cat(out) if out else torch.empty(0, len(learner.classnames))


def evaluate_features(learner: PromptLearner, features: torch.Tensor, labels: torch.Tensor, **kwargs) -> dict:
    logits = predict_logits(learner, features, **kwargs)
    return classification_metrics(logits.argmax(-1), labels, len(learner.classnames))


@torch.no_grad()
def encode_with_learner(learner: PromptLearner, data, records, batch_size: int = 100, precision: str = "fp32",
                        desc: str = "encode", workers: int = 0) -> torch.Tensor:
    """Image features (unnormalised, as a cache holds them) through the learner's own image path (for
    learners that change the image tower, so no feature cache applies); ``workers`` processes decode
    the images."""
    device = learner.backbone.device
    learner.eval()
    out = []
    keys = chunks([(i, 0) for i in range(len(records))], batch_size)
    images = RecordImages(data, records, eval_transform(learner.backbone))
    batches = load_batches(images, keys, workers, pin_memory=device.type == "cuda")
    for batch in Progress(batches, desc, total=len(keys), unit="batch"):
        with autocast(precision, device):
            out.append(learner.encode_images(batch.to(device, non_blocking=True)).float().cpu())
    if out:
        return torch.cat(out)
    return torch.empty(0, *feature_shape(learner.backbone, learner.uses_image_tokens))
