"""The training split of a run: the dataset after few-shot sampling, class imbalance and the class subset.

A hash of the data a result depends on (the training records it trains on, and the class names and
test records of every dataset it is tested on) is recorded with the results, so a registry can tell
when a rerun would see other images or classes than the recorded run did: an image added to a
folder, a replaced few-shot split file, a renamed class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from vlprompt.data.records import DatasetSplits
from vlprompt.data.sampling import few_shot, imbalanced, subsample_classes
from vlprompt.data.split_files import FORMATS, export_split, is_subset
from vlprompt.engine.config import RunConfig
from vlprompt.engine.datasets import resolve_dataset, run_dataset, split_base
from vlprompt.errors import check_choice


def sample_split(config: RunConfig, dataset: DatasetSplits | None = None
                 ) -> tuple[DatasetSplits, DatasetSplits, dict | None]:
    """(dataset after sampling, its training subset of classes, per-class training counts or None).

    ``dataset`` is the run's dataset (``run_dataset``, with its split file) when the caller has it already.
    """
    data = dataset if dataset is not None else run_dataset(config.data.dataset, config.data.root,
                                                           config.data.split_file)
    seed = config.train.seed
    counts = None
    if config.data.shots is not None and not is_subset(config.data.split_file):  # a few-shot file is the sample
        data = few_shot(data, config.data.shots, seed, cache_dir=Path(config.cache_dir).expanduser() / "splits")
    if config.data.imbalance_ratio is not None:
        data, counts = imbalanced(data, config.data.imbalance_ratio, seed)
    return data, subsample_classes(data, config.data.subsample), counts


def tested_data(config: RunConfig, data: DatasetSplits, resolve=resolve_dataset) -> list[DatasetSplits]:
    """The datasets a run is tested on: its own (every class subset is part of it), then data.eval_datasets."""
    return [data] + [resolve(spec, config.data.root) for spec in config.data.eval_datasets]


def split_hash(train_data: DatasetSplits, tested: Sequence[DatasetSplits] = ()) -> str:
    """Hash of the training split's classes and records, then of each tested dataset's classes and test records."""
    h = hashlib.sha256()
    for data, records in [(train_data, train_data.train)] + [(d, d.test) for d in tested]:
        h.update(json.dumps(data.classnames).encode())
        for r in records:
            h.update(f"{r.label}\t{r.path}\n".encode())
        h.update(b"\0")
    return h.hexdigest()[:16]



def export_dataset_split(spec: str, root: str | None, fmt: str, out: str | Path, shots: int | None = None,
                         seed: int = 1, split_file: str | None = None) -> list[Path]:
    """Write a dataset's split, or the few-shot subset a run with ``data.shots=shots`` and ``train.seed=seed``
    trains on, as CoOp JSON or rethinking_fewshot_vlms JSONL (``data.split_file`` reads both back)."""
    check_choice("--format", fmt, FORMATS)
    data = run_dataset(spec, root, split_file)
    if shots is not None and not is_subset(split_file):
        data = few_shot(data, shots, seed)
    base = split_base(spec, root)
    if fmt == "jsonl" and ":" not in spec and root is not None:  # the reference's paths start at the data root
        base = Path(root).absolute()
    return export_split(data, fmt, Path(out), base, shots, seed if shots is not None else None)
