"""Precision: frozen towers in fp16/bf16 (backbone.precision) and fp16/bf16 autocast (train.precision)
train every learner with fp32 prompt tensors and fp32 gradients, close to the fp32 result."""

from __future__ import annotations

import pytest
import torch

from vlprompt.backbones import load_backbone
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.trainer import TrainConfig, Trainer
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.registry import build_regularizer

CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]
LEARNERS = {"coop": {"n_ctx": 4}, "cocoop": {}, "maple": {"prompt_depth": 3},
            "ivlp": {"prompt_depth_text": 3, "prompt_depth_vision": 3}}


def _train(backbone, learner_name, precision, images, labels, regs=()):
    torch.manual_seed(0)
    learner = build_learner(learner_name, backbone, CLASSES, "a photo of a {}.", **LEARNERS[learner_name])
    trainer = Trainer(learner, TrainConfig(epochs=2, batch_size=4, lr=0.01, precision=precision),
                      [build_regularizer(r) for r in regs], TrainContext(learner=learner))
    if learner.uses_image_tower:
        batches = [{"images": images, "labels": labels}]
    else:
        with torch.no_grad():
            feats = backbone.encode_image(images).float()
        batches = list(FeatureBatches(feats[None], labels, 4, seed=0).epoch(0))
    for _ in range(3):
        for batch in batches:
            scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0
            losses, _ = trainer._step(dict(batch))
            assert all(torch.isfinite(v) for v in losses.values())
            if trainer.scaler.is_enabled():  # no step was skipped for an overflow
                assert trainer.scaler.get_scale() == scale
    return learner


@pytest.mark.parametrize("learner_name", sorted(LEARNERS))
@pytest.mark.parametrize("towers,autocast", [("bf16", "fp32"), ("fp32", "bf16"), ("fp16", "fp16")])
def test_lower_precision_keeps_fp32_prompts_and_stays_close(learner_name, towers, autocast):
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4)
    reference = _train(load_backbone("vlprompt-tiny", "world"), learner_name, "fp32", images, labels,
                       regs=[{"name": "kgcoop"}])
    low = _train(load_backbone("vlprompt-tiny", "world", precision=towers), learner_name, autocast, images,
                 labels, regs=[{"name": "kgcoop"}])
    assert low.backbone.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[towers]
    for name, tensor in low.learnable_tensors().items():
        assert tensor.dtype == torch.float32, name
        start = reference.learnable_tensors()[name]
        assert (tensor - start).abs().max() < 0.05 + 0.05 * start.abs().max(), name


def test_the_identity_does_not_depend_on_the_towers_precision():
    assert (load_backbone("vlprompt-tiny", "world", precision="bf16").identity
            == load_backbone("vlprompt-tiny", "world").identity)


def test_precision_settings_are_validated():
    with pytest.raises(BackboneError, match="backbone.precision='int8' is not valid"):
        load_backbone("vlprompt-tiny", None, precision="int8")
    with pytest.raises(ConfigError, match="train.precision='fp8'"):
        TrainConfig(precision="fp8")
