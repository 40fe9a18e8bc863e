"""Image decoding and augmentation in ``torch.utils.data.DataLoader`` workers.

Every image is addressed by a key ``(record index, view)``; an augmented view draws its randomness
from a seed derived from (seed, index, view) alone, so the pixels do not depend on which worker
decodes them, in which order, or how many workers there are (``data.workers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from vlprompt.data.records import DatasetSplits, ImageRecord


def view_seed(seed: int, index: int, view: int) -> int:
    return (seed * 1_000_003 + index * 9_176 + view) % (2**63)


class RecordImages(Dataset):
    """Transformed images of ``records`` by key (index, view); with ``seed`` each view is seeded."""

    def __init__(self, data: DatasetSplits, records: list[ImageRecord], transform: Callable,
                 seed: int | None = None):
        self.data, self.records, self.transform, self.seed = data, records, transform, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, view = key
        image = self.data.load_image(self.records[index])
        if self.seed is None:
            return self.transform(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(self.seed, index, view))
            return self.transform(image)


def load_batches(images: RecordImages, batches: list[list[tuple[int, int]]], workers: int = 0,
                 pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """Stacked image batches, one per list of keys, in order; decoded by ``workers`` processes."""
    if not batches:
        return iter(())
    loader = DataLoader(images, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                        collate_fn=torch.stack)
    return iter(loader)


def chunks(keys: list, size: int) -> list[list]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]
