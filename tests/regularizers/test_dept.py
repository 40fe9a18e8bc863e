"""DePT: the head's logits, loss and base-class fusion against hand computations; the total training loss is
DePT's; the head trains at its multiple of the learning rate, rides in the artifact, and a coop+dept
base-to-new run records both the split-aware and the split-agnostic numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.config import TrainConfig, resolve_config
from vlprompt.engine.run import harmonic_mean
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.coop import CoOp
from vlprompt.learners.heads import DePTHead
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.dept import DePT


def toy_head(weight=0.7):
    """Two classes, two channels: cwT scale (2, 1) shift (0, 1) on images, scale (1, 3) shift (1, 0) on text;
    the linear head W = [[1, 0], [0, 1]], b = (0, 1)."""
    head = DePTHead(2, ["cat", "dog"], weight=weight)
    with torch.no_grad():
        head.image_transform.scale.copy_(torch.tensor([2.0, 1.0]))
        head.image_transform.shift.copy_(torch.tensor([0.0, 1.0]))
        head.text_transform.scale.copy_(torch.tensor([1.0, 3.0]))
        head.text_transform.shift.copy_(torch.tensor([1.0, 0.0]))
        head.linear.weight.copy_(torch.eye(2))
        head.linear.bias.copy_(torch.tensor([0.0, 1.0]))
    return head


def test_head_logits_loss_and_fusion_by_hand():
    head = toy_head()
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # cwT: (2, 1), (0, 3); linear: (2, 1 + 1) = (2, 2), (0, 3 + 1) = (0, 4)
    assert head.head_logits(image).tolist() == [[2.0, 2.0], [0.0, 4.0]]
    text = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # class 0, class 1
    labels = torch.tensor([1, 0])
    # text rows of the labels: (0, 1) -> cwT (1, 3) -> (1, 4); (1, 1) -> (2, 3) -> (2, 4); then the images'
    rows = torch.tensor([[1.0, 4.0], [2.0, 4.0], [2.0, 2.0], [0.0, 4.0]])
    targets = [1, 0, 1, 0]
    expected = sum(-r[t] + math.log(math.exp(r[0]) + math.exp(r[1])) for r, t in zip(rows.tolist(), targets)) / 4
    assert head.training_loss(image, text, labels).item() == pytest.approx(expected, abs=1e-6)
    per_image = torch.stack([text, text.flip(0)])  # image 1 sees the classes' rows swapped
    rows_b = torch.tensor([[1.0, 4.0], [1.0, 4.0], [2.0, 2.0], [0.0, 4.0]])  # its label-0 row is (0, 1)
    expected_b = sum(-r[t] + math.log(math.exp(r[0]) + math.exp(r[1])) for r, t in zip(rows_b.tolist(), targets)) / 4
    assert head.training_loss(image, per_image, labels).item() == pytest.approx(expected_b, abs=1e-6)
    clip = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    fused = head.adjust(clip, image, ["cat", "dog"], "base")
    assert torch.allclose(fused, torch.tensor([[0.3 * 10 + 0.7 * 2, 0.7 * 2], [0.0, 0.3 * 10 + 0.7 * 4]]))
    # the learner's column 0 is now "dog": the head's "dog" row (2, 4) is fused into it
    assert head.adjust(clip, image, ["dog", "cat"], "base")[:, 0].tolist() == pytest.approx([3 + 0.7 * 2, 0.7 * 4])
    for split in ("new", None):
        assert head.adjust(clip, image, ["bird", "fish"], split) is clip
    with pytest.raises(ConfigError, match="only the 2 classes"):
        head.adjust(clip, image, ["bird", "fish"], "base")


def test_total_loss_is_deps_weighted_sum(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    reg = DePT()
    ctx = TrainContext(learner=learner)
    reg.setup(ctx)
    assert Capability.SPLIT_AWARE in learner.offers and Capability.SPLIT_AWARE not in CoOp.capabilities
    feats = torch.randn(4, tiny_backbone.embed_dim)
    labels = torch.tensor([0, 1, 2, 0]) % len(classnames)
    out = learner(features=feats)
    ce = F.cross_entropy(out.logits, labels)
    total = ce + reg.extra_loss(ctx, out, {"labels": labels})["dept"]
    head = learner.head
    # the official head reads the towers' raw outputs: the cached image features and the prompts' EOT features
    raw_text = learner.encode_context(learner.ctx)
    assert torch.equal(out.raw_image_features, feats) and torch.equal(out.raw_text_features, raw_text)
    assert torch.allclose(out.text_features, F.normalize(raw_text, dim=-1))
    rows = torch.cat([head.text_transform(raw_text[labels]), head.image_transform(feats)])
    ce_head = F.cross_entropy(rows @ head.linear.weight.t() + head.linear.bias, torch.cat([labels, labels]))
    assert total.item() == pytest.approx((0.3 * ce + 0.7 * ce_head).item(), abs=1e-5)
    assert out.logits.tolist() == learner(features=feats).logits.tolist()  # not told: the learner's logits
    view = learner.for_classes(list(classnames))
    view.set_inference_split("base")
    with view.fixed_classifier():  # as evaluation scores: the head still reads the raw image features
        fused = view(features=feats).logits
    assert torch.allclose(fused, 0.3 * out.logits + 0.7 * head.head_logits(feats), atol=1e-5)
    assert learner.inference_split is None


def test_head_reads_normalised_features_of_a_learner_with_an_adapter(tiny_backbone, classnames):
    """CLIP-Adapter's scored features are not a tower output normalised: its head reads what it scores."""
    from vlprompt.learners.clip_adapter import CLIPAdapter

    learner = CLIPAdapter(tiny_backbone, classnames)
    assert not learner.exposes_tower_outputs and CoOp(tiny_backbone, classnames, n_ctx=2).exposes_tower_outputs
    ctx = TrainContext(learner=learner)
    DePT().setup(ctx)
    feats = torch.randn(3, tiny_backbone.embed_dim)
    out = learner(features=feats)
    assert out.raw_image_features is None and out.raw_text_features is None
    view = learner.for_classes(list(classnames))
    view.set_inference_split("base")
    expected = 0.3 * out.logits + 0.7 * learner.head.head_logits(out.image_features)
    assert torch.allclose(view(features=feats).logits, expected, atol=1e-5)


def test_head_trains_at_its_lr_multiple_and_rides_in_the_artifact(tiny_backbone, classnames, tmp_path):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    trainer = Trainer(learner, TrainConfig(epochs=3, lr=0.01, warmup_epochs=1), [DePT(lr_multiplier=6.5)],
                      TrainContext(learner=learner))
    groups = {g["lr_multiplier"]: {id(p) for p in g["params"]} for g in trainer.optimizer.param_groups}
    assert groups[6.5] == {id(p) for p in learner.head.parameters()} and id(learner.ctx) in groups[1.0]
    batches = [{"features": torch.randn(4, tiny_backbone.embed_dim), "labels": torch.tensor([0, 1, 0, 1])}]

    class Batches:
        def epoch(self, epoch):
            return iter(batches)

        def __len__(self):
            return 1

    history = trainer.fit(Batches())
    assert [r["lr"] for r in history] == pytest.approx([1e-5, 0.01, 0.01 * (1 + math.cos(math.pi / 3)) / 2])
    lrs = sorted(g["lr"] for g in trainer.optimizer.param_groups)
    assert lrs == pytest.approx([history[-1]["lr"], 6.5 * history[-1]["lr"]])
    save_pretrained(learner, tmp_path / "prompt")
    loaded = from_pretrained(tmp_path / "prompt", backbone=tiny_backbone)
    assert isinstance(loaded.head, DePTHead) and loaded.head.weight == 0.7
    assert torch.equal(loaded.head.linear.weight, learner.head.linear.weight.detach())
    view = loaded.for_classes(list(classnames))
    view.set_inference_split("base")
    feats = torch.randn(3, tiny_backbone.embed_dim)
    original = learner.for_classes(list(classnames))
    original.set_inference_split("base")
    assert torch.allclose(view(features=feats).logits, original(features=feats).logits.detach(), atol=1e-5)


def test_coop_dept_base_to_new_run_records_both_numbers(folder_base_to_new_run):
    run_dir = folder_base_to_new_run("train.epochs=2", "learner.name=coop", "learner.options.n_ctx=2",
                                     "regularizers=[{name: dept}]")
    saved = json.loads((run_dir / "results.json").read_text())
    m = saved["metrics"]
    assert saved["inference"] == "split_aware" and saved["regularizers"] == ["dept"]
    # told "new", DePT scores through CoOp alone: the split-agnostic path, the same number
    assert m["new"]["split_aware"]["accuracy"] == m["new"]["accuracy"]
    assert m["base"]["split_aware"]["num_samples"] == m["base"]["num_samples"] == 12
    assert m["split_aware_harmonic_mean"] == pytest.approx(
        harmonic_mean(m["base"]["split_aware"]["accuracy"], m["new"]["accuracy"]))
    history = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert all("loss_dept" in r for r in history)
    learner = from_pretrained(run_dir / "prompt")
    assert isinstance(learner.head, DePTHead) and learner.head.trained_classes == ["thing a", "thing b", "thing c"]


def test_dept_is_refused_without_a_new_class_path():
    with pytest.raises(ConfigError, match="'dept' cannot be used with learner 'linear_probe'"):
        resolve_config(None, ["learner.name=linear_probe", "regularizers=[{name: dept}]"])


def test_mmrl_applies_the_head_after_its_own_split_aware_path(tiny_backbone, classnames):
    """MMRL scores by its own forward: told base, DePT's fusion is applied to MMRL's fused scores."""
    from vlprompt.learners.mmrl import MMRL

    learner = MMRL(tiny_backbone, classnames, first_block=2)
    DePT().setup(TrainContext(learner=learner))
    learner.eval()
    images = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    features = learner.encode_images(images).detach()
    view = learner.for_classes(list(classnames))
    view.set_inference_split("base")
    with torch.no_grad():
        out = view(features=features)
        mmrl_fused = 0.7 * out.extras["class_token_logits"] + 0.3 * out.extras["representation_logits"]
        expected = 0.3 * mmrl_fused + 0.7 * learner.head.head_logits(out.image_features)
    assert torch.allclose(out.logits, expected, atol=1e-5)
