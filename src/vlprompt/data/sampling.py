"""Few-shot, base/new and class-imbalanced subsets of a dataset, replaying the reference procedures.

Few-shot (Dassl ``generate_fewshot_dataset``, methods.md §1.3): with Python's ``random`` seeded by
the run seed, visit the classes in order of first appearance in the split and draw ``shots`` images
per class with ``random.sample`` (all of them when a class has fewer); the training split is
sampled first, then the validation split with min(shots, 4) from the same random stream.

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
from vlprompt.errors import ConfigError, DataError, check_choice
from vlprompt.io import write_json

SAMPLER_VERSION = 1  # bump when a change to the procedure would pick other images


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

    A dataset whose validation split is its test split (ImageNet) keeps it whole and only the
    training split is sampled, as in the reference. With ``cache_dir`` the selection is saved as
    ``<name>_<shots>shot_seed<seed>_<hash>.json``, the hash covering everything that decides the
    selection (the source splits, shots, seed); a later call finds that file and reuses it, so a
    shared file pins the exact images even where a folder listing would come out differently.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"shots={shots!r} must be a whole number of at least 1")
    val_is_test = splits.val == splits.test
    path = None
    if cache_dir is not None:
        key = _selection_key(splits, shots, seed)
        path = Path(cache_dir) / f"{_safe(splits.name)}_{shots}shot_seed{seed}_{key}.json"
        if path.is_file():
            return _reuse(splits, path, val_is_test)
    rng = random.Random(seed)  # the same stream as the reference's random.seed(seed)
    train = sample_per_class(splits.train, shots, rng)
    val = splits.val if val_is_test else sample_per_class(splits.val, min(shots, 4), rng)
    if path is not None:
        write_json(path, {"dataset": splits.name, "shots": shots, "seed": seed,
                          "train": _listing(train), "val": None if val_is_test else _listing(val)})
    return splits.with_splits(train=train, val=val)


def _selection_key(splits: DatasetSplits, shots: int, seed: int) -> str:
    """Hash of the inputs of the sampler: same hash, same selection."""
    h = hashlib.sha256(json.dumps([SAMPLER_VERSION, splits.name, shots, seed]).encode())
    for split in (splits.train, splits.val):
        for r in split:
            h.update(f"{r.label}\t{r.path}\n".encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _reuse(splits: DatasetSplits, path: Path, val_is_test: bool) -> DatasetSplits:
    """The selection stored in ``path``, mapped back onto the records of ``splits``."""
    try:
        stored = json.loads(path.read_text())
        train = _records_at(splits.train, stored["train"])
        val = splits.val if val_is_test else _records_at(splits.val, stored["val"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"few-shot split file {path} is damaged or does not match the dataset ({exc}); "
                        "delete it and it will be sampled again") from exc
    return splits.with_splits(train=train, val=val)


def _listing(records: list[ImageRecord]) -> list[list]:
    return [[r.path, r.label] for r in records]


def _records_at(records: list[ImageRecord], listing: list[list]) -> list[ImageRecord]:
    by_key = {(r.path, r.label): r for r in records}
    missing = [entry for entry in listing if tuple(entry) not in by_key]
    if missing:
        raise KeyError(f"{len(missing)} listed image(s) are not in the split, e.g. {missing[0]}")
    return [by_key[tuple(entry)] for entry in listing]


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
    if n_max < 1:
        raise ConfigError(f"imbalance n_max={n_max} must be at least 1 (the image count of the largest class)")
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
