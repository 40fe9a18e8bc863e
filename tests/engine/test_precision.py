"""Precision: frozen towers in fp16/bf16 (backbone.precision) and fp16/bf16 autocast (train.precision)
train every learner with fp32 prompt tensors and fp32 gradients, close to the fp32 result."""

from __future__ import annotations

import method_matrix
import pytest

from vlprompt.backbones import load_backbone
from vlprompt.engine.config import TrainConfig
from vlprompt.errors import BackboneError, ConfigError


@pytest.mark.parametrize("learner_name", method_matrix.trained_learners())
@pytest.mark.parametrize("towers,autocast", [("bf16", "fp32"), ("fp32", "bf16"), ("fp16", "fp16")])
def test_lower_precision_keeps_fp32_prompts_and_stays_close(learner_name, towers, autocast):
    method_matrix.check_precision(learner_name, towers, autocast)


def test_the_identity_does_not_depend_on_the_towers_precision():
    assert (load_backbone("vlprompt-tiny", "world", precision="bf16").identity
            == load_backbone("vlprompt-tiny", "world").identity)


def test_precision_settings_are_validated():
    with pytest.raises(BackboneError, match="backbone.precision='int8' is not valid"):
        load_backbone("vlprompt-tiny", None, precision="int8")
    with pytest.raises(ConfigError, match="train.precision='fp8'"):
        TrainConfig(precision="fp8")
