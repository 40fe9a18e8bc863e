"""The training split of a run: the dataset after few-shot sampling, class imbalance and the class subset.

Its hash (over the (path, label) list of the training records it trains on) is recorded with the
results, so a registry can tell when a rerun would see other images than the recorded run did.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vlprompt.data.records import DatasetSplits
from vlprompt.data.sampling import few_shot, imbalanced, subsample_classes
from vlprompt.engine.config import RunConfig
from vlprompt.engine.datasets import resolve_dataset


def sample_split(config: RunConfig, dataset: DatasetSplits | None = None
                 ) -> tuple[DatasetSplits, DatasetSplits, dict | None]:
    """(dataset after sampling, its training subset of classes, per-class training counts or None).

    ``dataset`` is the resolved ``config.data.dataset`` when the caller has it already.
    """
    data = dataset if dataset is not None else resolve_dataset(config.data.dataset, config.data.root)
    seed = config.train.seed
    counts = None
    if config.data.shots is not None:
        data = few_shot(data, config.data.shots, seed, cache_dir=Path(config.cache_dir).expanduser() / "splits")
    if config.data.imbalance_ratio is not None:
        data, counts = imbalanced(data, config.data.imbalance_ratio, seed)
    return data, subsample_classes(data, config.data.subsample), counts


def split_hash(train_data: DatasetSplits) -> str:
    h = hashlib.sha256()
    for r in train_data.train:
        h.update(f"{r.label}\t{r.path}\n".encode())
    return h.hexdigest()[:16]

