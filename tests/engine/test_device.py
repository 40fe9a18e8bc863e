"""Device correctness without a GPU: every tensor a training step creates must be made on the
backbone's device. The step runs with the default device set to ``meta``, so a tensor created without
an explicit device becomes a meta tensor, and the first operation mixing it with the real (CPU)
tensors, or moving it back, raises. Tests that need CUDA run only where it exists."""

from __future__ import annotations

import method_matrix
import pytest
import torch

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.device import resolve_device
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.base import Regularizer, TrainContext

METHODS = [(lname, None) for lname in method_matrix.trained_learners()] + method_matrix.composing_pairs(
    method_matrix.DEVICE_OPTIONS)


@pytest.mark.parametrize("learner_name,reg_name", METHODS)
def test_a_training_step_creates_no_tensor_off_the_backbones_device(
        tiny_backbone, classnames, training_batches, learner_name, reg_name):
    method_matrix.check_device(learner_name, reg_name, tiny_backbone, classnames, training_batches)


class StrayTensor(Regularizer):
    """A regularizer that creates a tensor without a device: what the test above must catch."""

    name = "stray"

    def extra_loss(self, ctx, outputs, batch):
        return {"stray": (outputs.logits.float() * torch.ones(outputs.logits.shape[-1])).mean()}


def test_the_check_catches_a_tensor_created_without_a_device(tiny_backbone, classnames):
    learner = build_learner("coop", tiny_backbone, classnames, n_ctx=2)
    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=4), [StrayTensor()], TrainContext(learner=learner))
    batches = FeatureBatches(torch.randn(1, 8, tiny_backbone.embed_dim), torch.arange(8) % 5, 4, seed=0)
    with pytest.raises(RuntimeError, match="meta"):
        method_matrix.steps_on_meta_default(trainer, batches)


def test_device_settings_are_validated():
    with pytest.raises(ConfigError, match="train.device='gpu' is not valid; choose one of: auto, cpu, cuda"):
        TrainConfig(device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_on_cuda_matches_the_cpu_run_and_its_files_load_on_cpu(tmp_path, image_folder_factory):
    from vlprompt.engine.config import resolve_config
    from vlprompt.engine.run import run_experiment
    from vlprompt.learners.artifact import from_pretrained

    images = image_folder_factory(tmp_path / "images", per_class=4)
    common = [f"data.dataset=folder:{images}", "data.shots=2", "backbone.pretrained=null", "train.epochs=2",
              "train.batch_size=4", "learner.options.n_ctx=2", f"cache_dir={tmp_path / 'cache'}"]
    runs = {d: run_experiment(resolve_config(None, common + [f"train.device={d}", f"output_dir={tmp_path / d}"]))
            for d in ("cpu", "cuda")}
    assert abs(runs["cpu"].metrics["all"]["accuracy"] - runs["cuda"].metrics["all"]["accuracy"]) <= 20.0
    cpu = from_pretrained(runs["cpu"].run_dir / "prompt")
    cuda_on_cpu = from_pretrained(runs["cuda"].run_dir / "prompt")
    assert cuda_on_cpu.ctx.device.type == "cpu"
    assert torch.allclose(cpu.ctx, cuda_on_cpu.ctx, atol=1e-3)
