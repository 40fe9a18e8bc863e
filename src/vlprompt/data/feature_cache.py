"""Image features computed once per (backbone weights, transform, image list) and kept on disk.

Learners that leave the image tower frozen see the same features every epoch, so encoding each
image once replaces an image-encoder pass per step. Learners that read region features
(``Capability.IMAGE_TOKENS``) get a separate entry of (1 + R, D) tokens per image. Training with augmentation uses V cached
augmented views per image (view v of image i comes from a seed derived from (seed, i, v), so the
cache is reproducible); V = 1 means the test transform, i.e. no augmentation. An image file enters
the key with its size and modification time, so an image replaced in place gets new features.

A cache file is trusted only after it checks out: it parses, holds one float32 tensor of the expected
shape whose SHA-256 matches the one in its header, and every value is finite. A damaged entry (a
truncated file, flipped bits, NaN) is removed and computed again, with one log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from vlprompt.backbones import Backbone
from vlprompt.data.loading import RecordImages, chunks, load_batches
from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.transforms import describe, eval_transform, train_transform
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.io import write_bytes
from vlprompt.progress import Progress

log = logging.getLogger(__name__)


def _sha256(features: torch.Tensor) -> str:
    return hashlib.sha256(features.contiguous().numpy()).hexdigest()


def _read_entry(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The features stored in ``path``; ``ValueError`` saying what is wrong when the entry is damaged."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys, meta = list(f.keys()), f.metadata() or {}
            features = f.get_tensor("features") if keys == ["features"] else None
    except Exception as exc:  # safetensors' own errors for a truncated or garbled file
        raise ValueError(f"unreadable: {type(exc).__name__}: {exc}") from None
    if features is None:
        raise ValueError(f"holds {keys}, not one 'features' tensor")
    if features.dtype != torch.float32 or tuple(features.shape) != shape:
        raise ValueError(f"holds {features.dtype} {tuple(features.shape)}, expected float32 {shape}")
    if "sha256" not in meta:
        raise ValueError("it records no SHA-256 (an entry written by an older vlprompt)")
    if meta["sha256"] != _sha256(features):
        raise ValueError("its SHA-256 does not match the one recorded when it was written")
    if not torch.isfinite(features).all():
        raise ValueError("holds NaN or infinite values")
    return features


def image_identity(path: str) -> list:
    """A file's path with its size and mtime (ns); a generated image's key (``scheme://...``) as it is."""
    try:
        st = os.stat(path)
    except OSError:  # not a file: the key itself identifies the pixels (the synthetic world)
        return [path]
    return [path, st.st_size, st.st_mtime_ns]


class FeatureCache:
    """A directory of safetensors files, one per feature set, named by the hash of what defines it."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def key(self, backbone: Backbone, records: list[ImageRecord], views: int, seed: int, tokens: bool = False) -> str:
        transform = train_transform(backbone) if views > 1 else eval_transform(backbone)
        spec = {"tokens": True} if tokens else {}  # pooled features keep the keys they always had
        spec |= {
            "backbone": backbone.identity.sha256,
            "precision": str(backbone.dtype),
            "transform": describe(transform),
            "views": views,
            "seed": seed if views > 1 else None,
            "images": [image_identity(r.path) for r in records],
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
        workers: int = 0,
        tokens: bool = False,
    ) -> torch.Tensor:
        """Unnormalised features of shape (views, N, D), or (views, N, 1 + R, D) with ``tokens``, from disk
        when already computed; ``workers`` processes decode the images (the features do not depend on how
        many)."""
        if views < 1:
            raise ValueError(f"views={views} must be at least 1")
        path = self.directory / f"{self.key(backbone, records, views, seed, tokens)}.safetensors"
        shape = (views, len(records), *feature_shape(backbone, tokens))
        try:
            found = os.stat(path)
        except FileNotFoundError:
            found = None
        if found is not None:
            try:
                return _read_entry(path, shape)
            except ValueError as damage:
                log.warning("feature cache entry %s is damaged (%s); removed it, computing the features again",
                            path, damage)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_ino == found.st_ino:  # not a sound entry another process just wrote
                        path.unlink()
        check_fits_in_memory(shape, desc)
        feats = encode_records(backbone, data, records, views, seed, batch_size, desc, workers, tokens).contiguous()
        if not torch.isfinite(feats).all():
            raise BackboneError(f"{backbone.identity.describe()} gives NaN or infinite features for some of the "
                                f"{len(records)} images ({desc}) at {backbone.dtype}; use backbone.precision=fp32 "
                                "or check the weights")
        write_bytes(path, save({"features": feats}, metadata={"sha256": _sha256(feats)}))
        return feats


def physical_memory_bytes() -> int | None:
    """This machine's memory (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(shape: tuple[int, ...], desc: str) -> None:
    """Refuse, before any image is encoded, features that could not be held in this machine's memory (region
    tokens take 1 + R times the pooled features' room: 394 KiB per image and view for ViT-B/16)."""
    needed, memory = 4 * torch.Size(shape).numel(), physical_memory_bytes()
    if memory is not None and needed > memory:
        views, images = shape[0], shape[1]
        raise ConfigError(f"the {desc} of {images} images x {views} views would take {needed / 2**30:.1f} GiB, more "
                          f"than this machine's {memory / 2**30:.1f} GiB of memory; use fewer cached views "
                          f"(train.views, e.g. 1) or fewer shots")


def feature_shape(backbone: Backbone, tokens: bool = False) -> tuple[int, ...]:
    """One image's features: (D,), or (1 + R, D) with its region tokens."""
    return (backbone.image_tokens, backbone.embed_dim) if tokens else (backbone.embed_dim,)


@torch.no_grad()
def encode_records(
    backbone: Backbone, data: DatasetSplits, records: list[ImageRecord], views: int, seed: int,
    batch_size: int = 64, desc: str = "features", workers: int = 0, tokens: bool = False,
) -> torch.Tensor:
    """Encode every record (in views augmented versions when views > 1) with the frozen image tower;
    with ``tokens``, the pooled feature and the regions' of each."""
    augmented = views > 1
    transform = train_transform(backbone) if augmented else eval_transform(backbone)
    device = backbone.device
    encode = backbone.encode_image_tokens if tokens else backbone.encode_image
    out = torch.empty(views, len(records), *feature_shape(backbone, tokens), device="cpu")
    keys = chunks([(i, v) for i in range(len(records)) for v in range(views)], batch_size)
    images = RecordImages(data, records, transform, seed if augmented else None)
    batches = load_batches(images, keys, workers, pin_memory=device.type == "cuda")
    pending = zip(keys, batches)
    encoded: dict = {}
    for key in Progress([key for batch_keys in keys for key in batch_keys], desc, unit="img"):  # lines per image
        if key not in encoded:
            batch_keys, batch = next(pending)
            encoded = dict(zip(batch_keys, encode(batch.to(device, non_blocking=True)).float().cpu()))
        out[key[1], key[0]] = encoded[key]
    return out
