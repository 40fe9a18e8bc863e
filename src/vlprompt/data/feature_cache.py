"""Image features computed once per (backbone weights, transform, image list) and kept on disk.

Learners that leave the image tower frozen see the same features every epoch, so encoding each
image once replaces an image-encoder pass per step. Training with augmentation uses V cached
augmented views per image (view v of image i comes from a seed derived from (seed, i, v), so the
cache is reproducible); V = 1 means the test transform, i.e. no augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlprompt.backbones import Backbone
from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.transforms import describe, eval_transform, train_transform
from vlprompt.io import atomic_path
from vlprompt.progress import Progress

log = logging.getLogger(__name__)


def view_seed(seed: int, index: int, view: int) -> int:
    return (seed * 1_000_003 + index * 9_176 + view) % (2**63)


class FeatureCache:
    """A directory of safetensors files, one per feature set, named by the hash of what defines it."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def key(self, backbone: Backbone, records: list[ImageRecord], views: int, seed: int) -> str:
        transform = train_transform(backbone) if views > 1 else eval_transform(backbone)
        spec = {
            "backbone": backbone.identity.sha256,
            "transform": describe(transform),
            "views": views,
            "seed": seed if views > 1 else None,
            "images": [r.path for r in records],
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]

    @torch.no_grad()
    def features(
        self,
        backbone: Backbone,
        data: DatasetSplits,
        records: list[ImageRecord],
        views: int = 1,
        seed: int = 0,
        batch_size: int = 64,
        desc: str = "features",
    ) -> torch.Tensor:
        """Unnormalised features of shape (views, N, D), from disk when already computed."""
        if views < 1:
            raise ValueError(f"views={views} must be at least 1")
        path = self.directory / f"{self.key(backbone, records, views, seed)}.safetensors"
        if path.is_file():
            return load_file(str(path))["features"]
        feats = encode_records(backbone, data, records, views, seed, batch_size, desc)
        with atomic_path(path) as tmp:
            save_file({"features": feats.contiguous()}, str(tmp))
        return feats


@torch.no_grad()
def encode_records(
    backbone: Backbone, data: DatasetSplits, records: list[ImageRecord], views: int, seed: int,
    batch_size: int = 64, desc: str = "features",
) -> torch.Tensor:
    """Encode every record (in views augmented versions when views > 1) with the frozen image tower."""
    transform = train_transform(backbone) if views > 1 else eval_transform(backbone)
    device = backbone.text.positional_embedding.device
    out = torch.empty(views, len(records), backbone.embed_dim)
    pending: list[torch.Tensor] = []
    slots: list[tuple[int, int]] = []

    def flush():
        if pending:
            feats = backbone.encode_image(torch.stack(pending).to(device)).float().cpu()
            for (v, i), f in zip(slots, feats):
                out[v, i] = f
            pending.clear()
            slots.clear()

    for i, record in enumerate(Progress(records, desc, unit="img")):
        image = data.load_image(record)
        for v in range(views):
            if views > 1:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(view_seed(seed, i, v))
                    pending.append(transform(image))
            else:
                pending.append(transform(image))
            slots.append((v, i))
            if len(pending) >= batch_size:
                flush()
    flush()
    return out
