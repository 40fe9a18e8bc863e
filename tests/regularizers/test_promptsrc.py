"""PromptSRC: the self-regulating losses and Gaussian prompt aggregation, by hand values and through the trainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.batches import FeatureBatches, ImageBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.learners.ivlp import IVLP
from vlprompt.learners.zeroshot import ZeroShotCLIP
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.promptsrc import (
    PromptSRC,
    PromptSRCConfig,
    gpa_weights,
    kl_to_teacher,
    mean_l1,
    teacher_text_features,
)


def test_gpa_weights_by_hand():
    # e^{-(e-2)^2/2} for e = 1..4 is e^-0.5, 1, e^-0.5, e^-2; their sum is 2.348396
    assert torch.allclose(gpa_weights(4, 2.0, 1.0), torch.tensor([0.258274, 0.425822, 0.258274, 0.057629],
                                                                 dtype=torch.float64), atol=1e-6)
    # the official formula: the normal density at epochs 1..E, divided by its sum (base-to-new: mu 15, sigma 1)
    density = [math.exp(-0.5 * ((e - 15) / 1.0) ** 2) / (1.0 * math.sqrt(2 * math.pi)) for e in range(1, 21)]
    official = torch.tensor([d / sum(density) for d in density], dtype=torch.float64)
    assert torch.allclose(gpa_weights(20, 15.0, 1.0), official, rtol=1e-12, atol=0)
    assert int(gpa_weights(20, 15.0, 1.0).argmax()) == 14  # epoch 15, 1-based
    # every epoch far in the tail: still finite, all weight on the epoch nearest to mu
    far = gpa_weights(2, 45.0, 1.0)
    assert torch.isfinite(far).all() and float(far.sum()) == pytest.approx(1.0) and float(far[1]) > 1 - 1e-15


def test_l1_and_kl_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert float(mean_l1(a, b)) == pytest.approx((0.4 + 0.8 + 0 + 0) / 4)
    # per-image text features (B, K, D) against (K, D): the mean over all B*K*D elements
    assert float(mean_l1(torch.stack([a, b]), b)) == pytest.approx((0.4 + 0.8) / 8)
    # p = softmax(0, ln 3) = (1/4, 3/4), p_zs = (1/2, 1/2): KL(p_zs || p) = ln(4/3) / 2, over B*K = 2 elements
    logits, teacher = torch.tensor([[0.0, math.log(3)]]), torch.zeros(1, 2)
    assert float(kl_to_teacher(logits, teacher)) == pytest.approx(math.log(4 / 3) / 2 / 2, abs=1e-7)
    # the other direction, KL(p || p_zs) = 0.0654..., is not what is computed
    assert float(kl_to_teacher(logits, teacher)) != pytest.approx(0.0654060, abs=1e-4)
    # with 3 rows of the same pair the sum triples and so does the element count: the value stays
    assert float(kl_to_teacher(logits.repeat(3, 1), teacher.repeat(3, 1))) == pytest.approx(math.log(4 / 3) / 4)


def test_teacher_averages_unnormalised_features_then_normalises(tiny_backbone, classnames):
    templates = ["a photo of a {}.", "itap of a {}.", "a {} in a video game."]
    raw = torch.stack([tiny_backbone.model.encode_text(tiny_backbone.tokenize(
        [t.format(c.replace("_", " ")) for c in classnames])) for t in templates])
    with torch.no_grad():
        ours = teacher_text_features(tiny_backbone, classnames, templates)
        assert (ours - F.normalize(raw.mean(0), dim=-1)).abs().max() < 1e-5
        # CoOp's ensemble (normalise, then average) is a different vector
        assert (ours - F.normalize(F.normalize(raw, dim=-1).mean(0), dim=-1)).abs().max() > 1e-4


def test_losses_of_an_image_prompting_learner_by_hand(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = IVLP(tiny_backbone, classnames, prompt_depth_text=2, prompt_depth_vision=2)
    templates = ["a photo of a {}.", "a bad photo of a {}."]
    ctx = TrainContext(learner=learner, templates={"coop": ["a photo of a {}."], "promptsrc": templates})
    reg = PromptSRC()
    reg.setup(ctx)
    images = torch.randn(3, 3, 64, 64)
    out = learner(images=images)
    losses = reg.extra_loss(ctx, out, {"images": images, "labels": torch.tensor([0, 1, 2])})
    with torch.no_grad():
        t_zs = F.normalize(sum(tiny_backbone.model.encode_text(tiny_backbone.tokenize(
            [t.format(c.replace("_", " ")) for c in classnames])) for t in templates), dim=-1)
        f_zs = F.normalize(tiny_backbone.model.encode_image(images), dim=-1)
        q = (tiny_backbone.model.logit_scale.exp() * f_zs @ t_zs.t()).softmax(-1)
        log_p = out.logits.log_softmax(-1)
        kl = (q * (q.log() - log_p)).sum() / q.numel()
    assert sorted(losses) == ["promptsrc_image", "promptsrc_kl", "promptsrc_text"]
    sum(losses.values()).backward()  # gradients reach the prompts of both towers
    assert learner.vision_ctx.grad.abs().sum() > 0 and learner.ctx.grad.abs().sum() > 0
    losses = {k: v.detach() for k, v in losses.items()}
    out = type(out)(out.logits.detach(), out.image_features.detach(), out.text_features.detach())
    assert float(losses["promptsrc_text"]) == pytest.approx(25 * float((out.text_features - t_zs).abs().mean()), rel=1e-5)
    assert float(losses["promptsrc_image"]) == pytest.approx(10 * float((out.image_features - f_zs).abs().mean()),
                                                             rel=1e-5)
    assert float(losses["promptsrc_kl"]) == pytest.approx(float(kl), rel=1e-4)
    assert all(float(v) > 0 for v in losses.values())


def test_frozen_image_features_drop_the_image_term_and_a_teacher_prompt_costs_nothing(tiny_backbone, classnames):
    """CoOp initialised as the teacher's single template is the teacher: every term is zero."""
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    ctx = TrainContext(learner=learner, templates={"coop": ["a photo of a {}."]})  # 'promptsrc' falls back to it
    reg = PromptSRC()
    reg.setup(ctx)
    with torch.no_grad():
        feats = tiny_backbone.encode_image(torch.randn(4, 3, 64, 64))
        losses = reg.extra_loss(ctx, learner(features=feats), {"features": feats, "labels": torch.arange(4)})
    assert sorted(losses) == ["promptsrc_kl", "promptsrc_text"]
    assert float(losses["promptsrc_text"]) < 1e-6 and abs(float(losses["promptsrc_kl"])) < 1e-6
    zero_weights = PromptSRC(text_weight=0, kl_weight=0)
    zero_weights.setup(ctx)
    assert zero_weights.extra_loss(ctx, learner(features=feats), {"features": feats}) == {}


def feature_run(tiny_backbone, classnames, epochs, gpa, checkpoint=None, stop_after_epoch=None):
    """CoOp + PromptSRC on fixed random features, SGD without warm-up (so every epoch moves the context)."""
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    reg = PromptSRC(gpa=gpa, gpa_mean=2.0, gpa_std=1.0)
    feats = torch.randn(1, 10, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    batches = FeatureBatches(feats, torch.arange(10) % len(classnames), 5, seed=0)
    trainer = Trainer(learner, TrainConfig(epochs=epochs, lr=0.5, batch_size=5, warmup_epochs=0), [reg],
                      TrainContext(learner=learner))
    history = trainer.fit(batches, checkpoint=checkpoint, stop_after_epoch=stop_after_epoch)
    return learner, trainer, history


def test_gpa_loads_the_weighted_average_of_the_epoch_snapshots_and_survives_a_resume(tiny_backbone, classnames,
                                                                                       tmp_path):
    # the same run without GPA, paused after each epoch: its contexts are the snapshots GPA averages
    snapshots = []
    for stop in (1, 2, 3):
        learner, _, _ = feature_run(tiny_backbone, classnames, 3, gpa=False, checkpoint=tmp_path / "plain.pt",
                                    stop_after_epoch=stop)
        snapshots.append(learner.ctx.detach().clone())
    assert not torch.allclose(snapshots[0], snapshots[1]) and not torch.allclose(snapshots[1], snapshots[2])
    weights = [0.2740686, 0.4518628, 0.2740686]  # e^{-(e-2)^2/2}, e = 1, 2, 3, normalised by hand
    expected = sum(w * s for w, s in zip(weights, snapshots))

    learner, _, history = feature_run(tiny_backbone, classnames, 3, gpa=True)
    assert (learner.ctx.detach() - expected).abs().max() < 1e-5
    assert [h["promptsrc_gpa_weight"] for h in history] == pytest.approx(weights, abs=1e-6)
    assert all(h["loss_promptsrc_text"] > 0 and "loss_promptsrc_image" not in h for h in history[1:])

    # interrupted after epoch 2 and resumed by a new trainer, learner and regularizer: the same aggregate
    feature_run(tiny_backbone, classnames, 3, gpa=True, checkpoint=tmp_path / "gpa.pt", stop_after_epoch=2)
    resumed, trainer, _ = feature_run(tiny_backbone, classnames, 3, gpa=True, checkpoint=tmp_path / "gpa.pt")
    assert trainer.start_epoch == 3 and torch.equal(resumed.ctx.detach(), learner.ctx.detach())


def test_resuming_a_checkpoint_without_the_running_sum_is_refused(tiny_backbone, classnames, tmp_path):
    feature_run(tiny_backbone, classnames, 3, gpa=False, checkpoint=tmp_path / "run.pt", stop_after_epoch=2)
    with pytest.raises(ConfigError, match=r"GPA lacks epochs \[1, 2\]"):
        feature_run(tiny_backbone, classnames, 3, gpa=True, checkpoint=tmp_path / "run.pt")


def test_trains_an_image_prompting_learner(tiny_backbone, classnames, image_folder_factory, tmp_path):
    from vlprompt.data.records import DatasetSplits, ImageRecord

    torch.manual_seed(0)
    root = image_folder_factory(tmp_path / "imgs", classnames, per_class=1, splits=("train",))
    records = [ImageRecord(str(f), k, d.name) for k, d in enumerate(sorted((root / "train").iterdir()))
               for f in sorted(d.iterdir())]
    batches = ImageBatches(tiny_backbone, DatasetSplits("tiny", classnames, records, [], []), records, 5, 0)
    learner = IVLP(tiny_backbone, classnames, prompt_depth_text=2, prompt_depth_vision=2)
    trainer = Trainer(learner, TrainConfig(epochs=2, lr=0.01, batch_size=5), [PromptSRC()], TrainContext(learner=learner))
    history = trainer.fit(batches)
    assert all(h[f"loss_promptsrc_{k}"] >= 0 for h in history for k in ("text", "image", "kl"))
    assert history[-1]["loss_promptsrc_image"] > 0  # the prompted image tower has left the frozen one


def test_refusals(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="gpa_std=0.0 must be positive"):
        PromptSRCConfig(gpa_std=0)
    with pytest.raises(ConfigError, match="text_weight=-1.0 must be non-negative"):
        PromptSRCConfig(text_weight=-1)
    with pytest.raises(ConfigError, match="promptsrc.templates='imagenet80' must be one of 'promptsrc', 'ensemble'"):
        PromptSRCConfig.from_mapping({"templates": "imagenet80"})
    learner = ZeroShotCLIP(tiny_backbone, classnames)
    with pytest.raises(ConfigError, match="regularizer 'promptsrc' cannot be used with learner 'zeroshot'"):
        Trainer(learner, TrainConfig(epochs=1), [PromptSRC()], TrainContext(learner=learner))
