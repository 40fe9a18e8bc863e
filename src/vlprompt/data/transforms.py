"""The reference image transforms (Dassl, methods.md §1.2) for a backbone's input size and statistics.

Train: RandomResizedCrop(scale 0.08-1) + horizontal flip. Test: resize the shorter side, centre crop.
Both use the backbone's interpolation and normalisation.
"""

from __future__ import annotations

from torchvision import transforms as T

from vlprompt.backbones import Backbone

_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def eval_transform(backbone: Backbone) -> T.Compose:
    interp = _INTERPOLATION.get(backbone.interpolation, T.InterpolationMode.BICUBIC)
    return T.Compose([
        T.Resize(backbone.image_size, interpolation=interp),
        T.CenterCrop(backbone.image_size),
        T.ToTensor(),
        T.Normalize(backbone.mean, backbone.std),
    ])


def train_transform(backbone: Backbone) -> T.Compose:
    interp = _INTERPOLATION.get(backbone.interpolation, T.InterpolationMode.BICUBIC)
    return T.Compose([
        T.RandomResizedCrop(backbone.image_size, scale=(0.08, 1.0), interpolation=interp),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(backbone.mean, backbone.std),
    ])


def describe(transform: T.Compose) -> str:
    """A stable text form of a transform, part of the feature-cache key."""
    return repr(transform)
