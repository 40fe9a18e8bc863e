"""Shared fixtures: small randomly initialised open_clip models and a tiny on-disk image dataset."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, os.cpu_count() or 1))

CLASSNAMES = ["red circle", "blue square", "green_triangle", "yellow star", "purple hexagon"]


@pytest.fixture(scope="session")
def tiny_backbone():
    """The embedded model's architecture with seeded random weights (fast, no download)."""
    from vlprompt.backbones import load_backbone

    return load_backbone("vlprompt-tiny", None, seed=0)


@pytest.fixture(scope="session")
def classnames():
    return list(CLASSNAMES)


@pytest.fixture(scope="session")
def image_folder_factory():
    """A function writing a tiny image folder; fixtures can't be imported, so tests receive it this way."""
    return make_image_folder


@pytest.fixture
def folder_base_to_new_run(tmp_path):
    """A function running one base-to-new run (2 shots, base and new evaluated) of the method the overrides
    name on a six-class image folder; returns the run directory."""
    from vlprompt.engine.config import resolve_config
    from vlprompt.engine.run import run_experiment

    def run(*method_overrides: str):
        images = make_image_folder(tmp_path / "images", classnames=[f"thing {c}" for c in "abcdef"], per_class=4)
        overrides = [f"data.dataset=folder:{images}", "data.shots=2", "data.subsample=base",
                     "data.eval_subsets=[base, new]", "backbone.pretrained=null", "train.batch_size=4",
                     *method_overrides, f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
        return run_experiment(resolve_config(None, overrides)).run_dir

    return run


def make_image_folder(root, classnames=CLASSNAMES, per_class=6, size=24, splits=("train", "val", "test")):
    """Write a tiny image folder (split/class/img.png) whose pixels carry a class-specific colour."""
    for s, split in enumerate(splits):
        for k, name in enumerate(classnames):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                g = torch.Generator().manual_seed(s * 100_000 + k * 1_000 + i)
                base = torch.tensor([(k * 53) % 256, (k * 97) % 256, (k * 151) % 256], dtype=torch.float32)
                noise = torch.randint(0, 40, (size, size, 3), generator=g).float()
                pixels = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(d / f"{i}.png")
    return root


@pytest.fixture
def training_batches(image_folder_factory, tmp_path):
    """A function giving a learner two training batches of four: images from a tiny folder for learners
    that prompt the image tower, else seeded random cached features."""
    from vlprompt.data.feature_cache import feature_shape
    from vlprompt.data.records import DatasetSplits, ImageRecord
    from vlprompt.engine.batches import FeatureBatches, ImageBatches

    def make(learner, backbone, classnames):
        if learner.uses_image_tower:
            root = image_folder_factory(tmp_path / "imgs", classnames, per_class=1, splits=("train",))
            records = [ImageRecord(str(f), k, d.name) for k, d in enumerate(sorted((root / "train").iterdir()))
                       for f in sorted(d.iterdir())]
            return ImageBatches(backbone, DatasetSplits("tiny", classnames, records, [], []), records, 4, 0)
        shape = feature_shape(backbone, learner.uses_image_tokens)
        feats = torch.randn(1, 8, *shape, generator=torch.Generator().manual_seed(0))
        return FeatureBatches(feats, torch.arange(8) % len(classnames), 4, seed=0)

    return make
