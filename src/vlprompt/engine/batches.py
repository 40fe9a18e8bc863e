"""Training batches, reproducible per epoch so that a resumed run sees exactly the same batches.

Shuffling and view selection draw from a generator seeded by (seed, epoch), never from the global
random state. As in Dassl, the last incomplete batch is dropped when at least one full batch exists.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vlprompt.data.loading import RecordImages, load_batches
from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.transforms import train_transform


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator, device="cpu")
    drop_last = n >= batch_size
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


class FeatureBatches:
    """Batches of cached features (views, N, D); each sample uses one randomly chosen view per epoch."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
        self.features, self.labels = features, labels
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        n = self.labels.shape[0]
        return n // self.batch_size if n >= self.batch_size else 1

    def epoch(self, epoch: int) -> Iterator[dict]:
        g = epoch_generator(self.seed, epoch)
        views = torch.randint(self.features.shape[0], (self.labels.shape[0],), generator=g, device="cpu")
        for idx in batch_indices(self.labels.shape[0], self.batch_size, g):
            yield {"features": self.features[views[idx], idx], "labels": self.labels[idx], "index": idx}


class ImageBatches:
    """Batches of augmented images, for learners that change the image tower (no feature cache).

    Image i of epoch e is augmented from the seed of (seed, i, e), decoded by ``workers`` processes.
    """

    def __init__(self, backbone, data: DatasetSplits, records: list[ImageRecord], batch_size: int, seed: int,
                 workers: int = 0):
        self.images = RecordImages(data, records, train_transform(backbone), seed)
        self.records = records
        self.labels = torch.tensor([r.label for r in records], device="cpu")
        self.batch_size, self.seed, self.workers = batch_size, seed, workers
        self.pin_memory = backbone.device.type == "cuda"

    def __len__(self) -> int:
        n = len(self.records)
        return n // self.batch_size if n >= self.batch_size else 1

    def epoch(self, epoch: int) -> Iterator[dict]:
        g = epoch_generator(self.seed, epoch)
        batches = batch_indices(len(self.records), self.batch_size, g)
        keys = [[(i, epoch) for i in idx.tolist()] for idx in batches]
        for idx, images in zip(batches, load_batches(self.images, keys, self.workers, self.pin_memory)):
            yield {"images": images, "labels": self.labels[idx], "index": idx}
