"""Feature cache: same features as encoding directly, computed once, keyed by what defines them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.data.feature_cache import FeatureCache
from vlprompt.data.records import DatasetSplits, ImageRecord, load_image_file
from vlprompt.data.transforms import eval_transform
from vlprompt.errors import DataError


def folder_records(root, split="train"):
    records = []
    for k, d in enumerate(sorted((root / split).iterdir())):
        for f in sorted(d.iterdir()):
            records.append(ImageRecord(str(f), k, d.name))
    return records


@pytest.fixture()
def folder(tmp_path, classnames, image_folder_factory):
    return image_folder_factory(tmp_path / "imgs", classnames, per_class=2, splits=("train",))


def test_cached_features_equal_direct_encoding_and_are_reused(tmp_path, folder, tiny_backbone, classnames):
    records = folder_records(folder)
    data = DatasetSplits("tiny", classnames, records, [], [])
    cache = FeatureCache(tmp_path / "cache")
    feats = cache.features(tiny_backbone, data, records)
    transform = eval_transform(tiny_backbone)
    with torch.no_grad():
        direct = tiny_backbone.encode_image(torch.stack([transform(load_image_file(r)) for r in records]))
    assert feats.shape == (1, len(records), tiny_backbone.embed_dim)
    assert (feats[0] - direct).abs().max() < 1e-5
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = cache.features(tiny_backbone, data, records)
    assert torch.equal(again, feats) and files[0].stat().st_mtime_ns == mtime


def test_augmented_views_are_distinct_and_reproducible(tmp_path, folder, tiny_backbone, classnames):
    records = folder_records(folder)[:3]
    data = DatasetSplits("tiny", classnames, records, [], [])
    a = FeatureCache(tmp_path / "a").features(tiny_backbone, data, records, views=3, seed=4)
    b = FeatureCache(tmp_path / "b").features(tiny_backbone, data, records, views=3, seed=4)
    assert torch.equal(a, b)
    assert F.cosine_similarity(a[0], a[1], dim=-1).max() < 0.99999
    c = FeatureCache(tmp_path / "a").features(tiny_backbone, data, records, views=3, seed=5)
    assert not torch.equal(a, c)


def test_missing_and_corrupt_images_name_the_file(tmp_path, folder, tiny_backbone, classnames):
    records = folder_records(folder)
    data = DatasetSplits("tiny", classnames, records, [], [])
    Path = type(tmp_path)
    Path(records[1].path).unlink()
    with pytest.raises(DataError, match=records[1].path):
        FeatureCache(tmp_path / "c").features(tiny_backbone, data, records)
    Path(records[2].path).write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot be decoded"):
        FeatureCache(tmp_path / "c").features(tiny_backbone, data, records[2:])
    assert not list((tmp_path / "c").glob("*.safetensors"))  # nothing half-written


def test_an_image_replaced_in_place_gets_a_new_key_and_new_features(tmp_path, folder, tiny_backbone, classnames):
    records = folder_records(folder)
    data = DatasetSplits("tiny", classnames, records, [], [])
    cache = FeatureCache(tmp_path / "cache")
    before_key = cache.key(tiny_backbone, records, views=1, seed=0)
    before = cache.features(tiny_backbone, data, records)
    assert cache.key(tiny_backbone, records, views=1, seed=0) == before_key  # unchanged files, same key
    import os

    from PIL import Image

    stat = os.stat(records[0].path)
    Image.new("RGB", (24, 24), (255, 255, 255)).save(records[0].path)  # same path, other pixels
    os.utime(records[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after_key = cache.key(tiny_backbone, records, views=1, seed=0)
    assert after_key != before_key
    after = cache.features(tiny_backbone, data, records)
    assert not torch.equal(after[0, 0], before[0, 0])  # the replaced image was encoded again
    assert torch.equal(after[0, 1:], before[0, 1:])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_an_entry_of_an_older_vlprompt_without_sha256_is_recomputed_and_says_so(tmp_path, folder, tiny_backbone,
                                                                                classnames, caplog):
    from safetensors.torch import load_file, save_file

    records = folder_records(folder)
    data = DatasetSplits("tiny", classnames, records, [], [])
    cache = FeatureCache(tmp_path / "cache")
    feats = cache.features(tiny_backbone, data, records)
    (entry,) = (tmp_path / "cache").glob("*.safetensors")
    save_file(load_file(str(entry)), str(entry))  # the same tensor, as an older vlprompt wrote it: no SHA-256
    with caplog.at_level("WARNING"):
        again = cache.features(tiny_backbone, data, records)
    assert torch.equal(again, feats)
    assert any("records no SHA-256 (an entry written by an older vlprompt)" in r.getMessage() for r in caplog.records)
