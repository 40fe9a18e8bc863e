"""Few-shot, base/new and class-imbalanced subsets of a dataset, replaying the reference procedures.

Few-shot (Dassl ``generate_fewshot_dataset``, methods.md §1.3): with Python's ``random`` seeded by
the run seed, visit the classes in order of first appearance in the split and draw ``shots`` images
per class with ``random.sample`` (all of them when a class has fewer); the training split is
sampled first, then the validation split with min(shots, 4).

Base/new (``subsample_classes``, §1.4): the sorted training labels, base = the first ceil(K/2),
new = the rest, each relabelled from 0; applied to every split.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.errors import ConfigError, check_choice
from vlprompt.io import write_json


def by_label_in_order(records: list[ImageRecord]) -> dict[int, list[ImageRecord]]:
    """Records grouped by label, labels in order of first appearance (a dict keeps insertion order)."""
    groups: dict[int, list[ImageRecord]] = {}
    for r in records:
        groups.setdefault(r.label, []).append(r)
    return groups


def sample_per_class(records: list[ImageRecord], shots: int, rng: random.Random) -> list[ImageRecord]:
    out: list[ImageRecord] = []
    for items in by_label_in_order(records).values():
        out.extend(rng.sample(items, shots) if len(items) >= shots else items)
    return out


def few_shot(splits: DatasetSplits, shots: int, seed: int, cache_dir: str | Path | None = None) -> DatasetSplits:
    """``shots`` training and min(shots, 4) validation images per class; the test split is untouched.

    With ``cache_dir`` the selection is also written as ``<name>_<shots>shot_seed<seed>_<hash>.json``
    (hash of the selected files), so the exact split a result came from can be found and shared.
    """
    if shots < 1:
        raise ConfigError(f"shots={shots} must be at least 1")
    rng = random.Random(seed)
    train = sample_per_class(splits.train, shots, rng)
    val = sample_per_class(splits.val, min(shots, 4), rng)
    if cache_dir is not None:
        content = {"dataset": splits.name, "shots": shots, "seed": seed,
                   "train": [r.path for r in train], "val": [r.path for r in val]}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(cache_dir) / f"{_safe(splits.name)}_{shots}shot_seed{seed}_{digest}.json"
        if not path.is_file():
            write_json(path, content)
    return splits.with_splits(train=train, val=val)


def subsample_classes(splits: DatasetSplits, which: str) -> DatasetSplits:
    """The base or new half of the classes (relabelled from 0), or everything for "all"."""
    check_choice("subsample", which, ("all", "base", "new"))
    if which == "all":
        return splits
    labels = sorted({r.label for r in splits.train} or range(splits.num_classes))
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if which == "base" else labels[m:]
    relabel = {old: new for new, old in enumerate(selected)}

    def keep(records: list[ImageRecord]) -> list[ImageRecord]:
        return [ImageRecord(r.path, relabel[r.label], r.classname) for r in records if r.label in relabel]

    return splits.with_splits(
        name=f"{splits.name} ({which})",
        classnames=[splits.classnames[old] for old in selected],
        train=keep(splits.train), val=keep(splits.val), test=keep(splits.test),
    )


def imbalance_counts(num_classes: int, ratio: float, n_max: int = 16) -> list[int]:
    """n_k = max(1, round(n_max * ratio^(k/(K-1)))) for rank k (methods.md §10.6, a reconstruction)."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"imbalance ratio={ratio} must be in (0, 1]; 1 is balanced")
    if num_classes == 1:
        return [n_max]
    return [max(1, round(n_max * ratio ** (k / (num_classes - 1)))) for k in range(num_classes)]


def imbalanced(splits: DatasetSplits, ratio: float, seed: int, n_max: int = 16,
               order: str = "random") -> tuple[DatasetSplits, dict[str, int]]:
    """Downsample the training split to an exponential class profile; returns the per-class counts.

    Class k in ``order`` (a seeded permutation, or label order) keeps n_k of its training images.
    Validation and test stay balanced.
    """
    check_choice("imbalance order", order, ("random", "label"))
    labels = list(range(splits.num_classes))
    rng = random.Random(seed)
    if order == "random":
        rng.shuffle(labels)
    counts = dict(zip(labels, imbalance_counts(len(labels), ratio, n_max)))
    groups = by_label_in_order(splits.train)
    train: list[ImageRecord] = []
    for label, items in groups.items():
        n = counts[label]
        train.extend(rng.sample(items, n) if len(items) > n else items)
    per_class = {splits.classnames[k]: len(groups.get(k, [])[: counts[k]]) for k in range(splits.num_classes)}
    return splits.with_splits(train=train), per_class


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
