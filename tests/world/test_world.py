"""The synthetic world: deterministic pixels and captions, task layout, pretraining resume, export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vlprompt.data.folder import read_image_folder
from vlprompt.data.sampling import few_shot, subsample_classes
from vlprompt.errors import ConfigError
from vlprompt.world.captions import caption
from vlprompt.world.generator import COLOURS, SHAPES, random_scene, render
from vlprompt.world.pretrain import PretrainConfig, export_weights, hard_negative_scenes, pretrain
from vlprompt.world.tasks import TASKS, export_image_folder, load_task, scene_of


def test_same_seed_same_pixels_and_captions():
    a, b = random.Random(7), random.Random(7)
    for _ in range(20):
        sa, sb = random_scene(a), random_scene(b)
        assert sa == sb
        assert np.array_equal(np.asarray(render(sa)), np.asarray(render(sb)))
        assert caption(sa, a) == caption(sb, b)
    other = random_scene(random.Random(8))
    assert not np.array_equal(np.asarray(render(other)), np.asarray(render(random_scene(random.Random(7)))))


def test_object_colours_are_where_the_scene_says():
    scene = random_scene(random.Random(0), shape="square", colour="red", count=1, size="large", filled=True,
                         texture="plain")
    pixels = np.asarray(render(scene)).reshape(-1, 3).astype(int)
    red = np.array(COLOURS["red"])
    assert (np.abs(pixels - red).sum(1) < 10).mean() > 0.1  # a large red square covers >10% of the image


def test_task_sizes_names_and_base_new_split():
    assert set(TASKS) >= {"objects", "shapes", "colours", "textures", "counts", "objects_outline", "objects_noise",
                          "objects_blur", "objects_colorshift"}
    objects = load_task("objects", train_per_class=2, test_per_class=3)
    assert len(objects.classnames) == len(COLOURS) * len(SHAPES) >= 100
    assert len(objects.train) == 2 * 120 and len(objects.test) == 3 * 120
    assert objects.template.format(objects.classnames[0]) == f"a photo of a {objects.classnames[0]}."
    base, new = subsample_classes(objects, "base"), subsample_classes(objects, "new")
    assert len(base.classnames) == len(new.classnames) == 60
    assert not set(base.classnames) & set(new.classnames)
    for half in (base, new):  # every colour and every shape appears on both sides
        assert {c.split()[0] for c in half.classnames} == set(COLOURS)
        assert {c.split()[1] for c in half.classnames} == set(SHAPES)
    assert load_task("objects_noise").classnames == objects.classnames
    with pytest.raises(ConfigError, match="objects"):
        load_task("object")


def test_noisy_base_task_splits_shapes_and_shifts_only_the_base_half():
    data = load_task("objects_noisy_base", train_per_class=1, test_per_class=1)
    base, new = subsample_classes(data, "base"), subsample_classes(data, "new")
    assert len(base.classnames) == len(new.classnames) == 60
    base_shapes, new_shapes = ({c.split()[1] for c in half.classnames} for half in (base, new))
    assert len(base_shapes) == len(new_shapes) == 6 and not base_shapes & new_shapes  # unseen shape words
    for half in (base, new):
        assert {c.split()[0] for c in half.classnames} == set(COLOURS)
    # the base half's pixels are the clean rendering plus camera noise (sigma 45); the new half's are clean
    for record, noisy in ((data.test[0], True), (data.test[60], False)):
        scene = scene_of("objects_noisy_base", "test", int(record.path.split("/")[-1].split("?")[0]), 0)
        clean = np.asarray(render(scene)).astype(float)
        residual = np.asarray(data.load_image(record)).astype(float) - clean
        assert (residual.std() > 30) == noisy, (record.classname, residual.std())


def test_default_training_split_lets_seeds_sample_different_images():
    data = load_task("objects_noisy_base")
    first, second = ({r.path for r in few_shot(data, 16, seed).train} for seed in (1, 2))
    assert len(first) == len(second) == 16 * 120 and len(first & second) < len(first) / 2


def test_images_are_generated_from_their_key():
    data = load_task("shapes", test_per_class=2)
    first = np.asarray(data.load_image(data.test[0]))
    again = np.asarray(load_task("shapes", test_per_class=2).load_image(data.test[0]))
    assert first.shape == (64, 64, 3) and np.array_equal(first, again)
    noisy = load_task("objects_noise", test_per_class=1)
    clean = load_task("objects", test_per_class=1)
    assert not np.array_equal(np.asarray(noisy.load_image(noisy.test[0])), np.asarray(clean.load_image(clean.test[0])))


def test_export_writes_a_readable_image_folder(tmp_path):
    data = load_task("counts", train_per_class=2, val_per_class=1, test_per_class=2)
    export_image_folder(data, tmp_path / "counts")
    again = read_image_folder(tmp_path / "counts")
    assert sorted(again.classnames) == sorted(data.classnames)
    assert len(again.train) == 6 and len(again.test) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["counts"]  # no partial folder left behind
    with pytest.raises(ConfigError, match="already exists"):
        export_image_folder(data, tmp_path / "counts")


def test_pretraining_resumes_to_the_same_weights(tmp_path):
    config = PretrainConfig(steps=4, batch_size=8, warmup_steps=2, checkpoint_every=2, workers=0)
    straight = pretrain(config, tmp_path / "a")
    pretrain(config, tmp_path / "b", stop_after=2)
    resumed = pretrain(config, tmp_path / "b")
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    size = export_weights(resumed, tmp_path / "w.safetensors")
    from vlprompt.backbones import load_backbone

    loaded = load_backbone("vlprompt-tiny", str(tmp_path / "w.safetensors"))
    for name, p in resumed.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], p), name
    assert size < 16 * 2**20


def test_pretraining_batches_group_one_colour_with_distinct_shapes():
    scenes = hard_negative_scenes(random.Random(3), 30, 4)
    assert len(scenes) == 30
    for start in range(0, 28, 4):
        group = scenes[start:start + 4]
        assert len({s.colour for s in group}) == 1
        assert len({s.shape for s in group}) == 4
