"""Decoding in DataLoader workers gives the same numbers as in the main process: every augmented
view has its own (seed, image, view) seed, whatever worker draws it."""

from __future__ import annotations

import pickle

import torch

from vlprompt.data.feature_cache import encode_records
from vlprompt.data.folder import read_image_folder
from vlprompt.engine.batches import ImageBatches
from vlprompt.engine.evaluate import encode_with_learner
from vlprompt.learners.coop import CoOp
from vlprompt.world.tasks import load_task


def test_features_do_not_depend_on_the_number_of_workers(tiny_backbone, image_folder_factory, tmp_path):
    data = read_image_folder(image_folder_factory(tmp_path / "imgs", per_class=3))
    for views in (1, 3):
        alone = encode_records(tiny_backbone, data, data.train, views=views, seed=7, batch_size=4, workers=0)
        pooled = encode_records(tiny_backbone, data, data.train, views=views, seed=7, batch_size=4, workers=2)
        assert alone.shape == (views, len(data.train), tiny_backbone.embed_dim)
        assert torch.equal(alone, pooled)
    assert not torch.equal(alone[0], alone[1])  # the views are really different augmentations


def test_image_batches_and_learner_encoding_do_not_depend_on_workers(tiny_backbone, classnames, image_folder_factory,
                                                                     tmp_path):
    data = read_image_folder(image_folder_factory(tmp_path / "imgs", per_class=2))
    epochs = {}
    for workers in (0, 2):
        batches = ImageBatches(tiny_backbone, data, data.train, 4, seed=3, workers=workers)
        epochs[workers] = [(b["images"], b["labels"]) for b in batches.epoch(1)]
    assert len(epochs[0]) == len(epochs[2]) > 1
    for (a, la), (b, lb) in zip(epochs[0], epochs[2]):
        assert torch.equal(a, b) and torch.equal(la, lb)
    learner = CoOp(tiny_backbone, data.classnames, n_ctx=2)
    assert torch.equal(encode_with_learner(learner, data, data.test, batch_size=3, workers=0),
                       encode_with_learner(learner, data, data.test, batch_size=3, workers=2))


def test_world_tasks_travel_to_worker_processes():
    task = load_task("shapes", train_per_class=1, val_per_class=1, test_per_class=1)
    copy = pickle.loads(pickle.dumps(task))
    record = task.test[0]
    assert copy.load_image(record).tobytes() == task.load_image(record).tobytes()
