"""Few-shot sampling against an independent replay of the reference, its split file, base/new and
the class-imbalanced sampler."""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from vlprompt.data.datasets import read_dataset
from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.sampling import few_shot, imbalance_counts, imbalanced, subsample_classes
from vlprompt.errors import ConfigError, DataError


def reference_few_shot(dataset: str, train, val, shots: int, seed: int):
    """The reference written out: set_random_seed seeds Python's global random; the dataset samples
    train, then (except ImageNet, whose val is its test set) val with min(shots, 4); per split the
    labels are visited in first-appearance order (defaultdict) and random.sample draws, without
    repetition, keeping the whole class when it is too small."""
    random.seed(seed)

    def generate(records, n):
        tracker = defaultdict(list)
        for item in records:
            tracker[item.label].append(item)
        out = []
        for items in tracker.values():
            out.extend(random.sample(items, n) if len(items) >= n else items)
        return [item.path for item in out]

    sampled_train = generate(train, shots)
    sampled_val = [r.path for r in val] if dataset == "imagenet" else generate(val, min(shots, 4))
    return sampled_train, sampled_val


@pytest.mark.parametrize("name,shots,seed", [("oxford_pets", 2, 1), ("eurosat", 4, 2), ("fgvc_aircraft", 1, 3),
                                             ("imagenet", 3, 1), ("dtd", 16, 2), ("sun397", 5, 3)])
def test_selection_equals_the_reference_procedure(datasets_root, tmp_path, name, shots, seed):
    data = read_dataset(name, datasets_root)
    sampled = few_shot(data, shots, seed, cache_dir=tmp_path)
    expected_train, expected_val = reference_few_shot(name, data.train, data.val, shots, seed)
    assert [r.path for r in sampled.train] == expected_train
    assert [r.path for r in sampled.val] == expected_val
    assert sampled.test == data.test and sampled.classnames == data.classnames
    (saved,) = tmp_path.glob(f"{name}_{shots}shot_seed{seed}_*.json")
    stored = json.loads(saved.read_text())
    assert [path for path, _ in stored["train"]] == expected_train
    assert stored["val"] is None if name == "imagenet" else [path for path, _ in stored["val"]] == expected_val


def interleaved_dataset() -> DatasetSplits:
    """Labels first appear in the order 2, 0, 1 and interleave: the visiting order matters."""
    def records(prefix, n):
        return [ImageRecord(f"/{prefix}/{label}_{i}.jpg", label, f"c{label}") for i in range(n) for label in (2, 0, 1)]

    return DatasetSplits("interleaved", ["c0", "c1", "c2"], records("train", 7), records("val", 6), records("test", 2))


def test_first_appearance_order_and_small_classes():
    data = interleaved_dataset()
    for seed in (1, 2, 3):
        sampled = few_shot(data, 3, seed)
        expected_train, expected_val = reference_few_shot("interleaved", data.train, data.val, 3, seed)
        assert [r.path for r in sampled.train] == expected_train
        assert [r.path for r in sampled.val] == expected_val
        assert [r.label for r in sampled.train] == [2] * 3 + [0] * 3 + [1] * 3
    assert few_shot(data, 16, 1).train == sorted(data.train, key=lambda r: [2, 0, 1].index(r.label))
    assert few_shot(data, 2, 1).train != few_shot(data, 2, 2).train
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="shots"):
            few_shot(data, bad, 1)


def test_saved_split_is_reused_and_checked(tmp_path):
    data = interleaved_dataset()
    first = few_shot(data, 2, 1, cache_dir=tmp_path)
    (saved,) = tmp_path.glob("interleaved_2shot_seed1_*.json")
    stored = json.loads(saved.read_text())
    # a file for the same inputs is read back, not sampled again: edit it and the edit comes back
    stored["train"] = list(reversed(stored["train"]))
    saved.write_text(json.dumps(stored))
    again = few_shot(data, 2, 1, cache_dir=tmp_path)
    assert [r.path for r in again.train] == list(reversed([r.path for r in first.train]))
    assert again.train[0] is next(r for r in data.train if r.path == again.train[0].path)
    # other inputs (seed, shots, or the source split itself) get another file
    few_shot(data, 2, 2, cache_dir=tmp_path)
    few_shot(data.with_splits(train=data.train[:-1]), 2, 1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 3
    stored["val"] = [["/elsewhere/0.jpg", 0]]
    saved.write_text(json.dumps(stored))
    with pytest.raises(DataError, match=f"{saved.name}.*delete it"):
        few_shot(data, 2, 1, cache_dir=tmp_path)


def test_base_new_split_relabels_each_half(datasets_root):
    data = read_dataset("eurosat", datasets_root)  # 3 classes: base = the first ceil(3/2) = 2
    base, new, every = (subsample_classes(data, w) for w in ("base", "new", "all"))
    assert every is data
    assert base.classnames == ["Annual Crop Land", "Forest"] and new.classnames == ["Sea or Lake"]
    for split in ("train", "val", "test"):
        assert [(r.path, r.label) for r in base.split(split)] == [(r.path, r.label) for r in data.split(split)
                                                                  if r.label < 2]
        assert [(r.path, r.label) for r in new.split(split)] == [(r.path, 0) for r in data.split(split)
                                                                 if r.label == 2]
    with pytest.raises(ConfigError, match="'base'"):
        subsample_classes(data, "novel")


def test_base_new_uses_sorted_labels_after_few_shot():
    data = interleaved_dataset()
    shot = few_shot(data, 2, 1)
    new = subsample_classes(shot, "new")  # labels {0,1,2}: base {0,1}, new {2} although 2 comes first
    assert new.classnames == ["c2"] and {r.path for r in new.train} == {r.path for r in shot.train if r.label == 2}


def test_imbalance_profile():
    assert imbalance_counts(5, 1.0) == [16] * 5
    assert imbalance_counts(5, 1 / 16) == [16, 8, 4, 2, 1]  # 16 * (1/16)^(k/4) = 16, 8, 4, 2, 1
    assert imbalance_counts(3, 0.25) == [16, 8, 4]
    assert imbalance_counts(2, 0.06) == [16, 1]  # 0.96 rounds to 1
    assert imbalance_counts(100, 0.06)[-1] == 1 and imbalance_counts(1, 0.25) == [16]
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="ratio"):
            imbalance_counts(3, bad)
    with pytest.raises(ConfigError, match="n_max"):
        imbalance_counts(3, 0.5, n_max=0)


def test_imbalanced_sampler_keeps_the_profile_and_records_counts(datasets_root):
    data = read_dataset("caltech101", datasets_root)  # 3 classes x 5 training images
    sub, counts = imbalanced(data, 0.25, seed=1, n_max=4, order="label")
    assert counts == {"face": 4, "leopard": 2, "accordion": 1}
    assert [sum(r.label == k for r in sub.train) for k in range(3)] == [4, 2, 1]
    assert set(sub.train) <= set(data.train) and sub.test == data.test and sub.val == data.val
    # random order: a seeded permutation of the classes gets the profile
    permuted = list(range(3))
    random.Random(7).shuffle(permuted)
    sub, counts = imbalanced(data, 0.25, seed=7, n_max=4)
    assert [counts[data.classnames[k]] for k in permuted] == [4, 2, 1]
    assert imbalanced(data, 0.25, seed=7, n_max=4)[0].train == sub.train
    with pytest.raises(ConfigError, match="order"):
        imbalanced(data, 0.25, seed=1, order="size")
