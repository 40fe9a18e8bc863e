"""QPrompt: levels, straight-through gradient, k-means, CAC, bit-packed storage, exact reload, training."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from torch.nn.utils import parametrize

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import TENSORS_FILE, from_pretrained, save_pretrained
from vlprompt.learners.cocoop import CoCoOp
from vlprompt.learners.coop import CoOp
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.qprompt import (
    QPrompt,
    dequantize,
    histogram_kl,
    kmeans_1d,
    pack_quantized,
    storage_report,
    unpack_quantized,
)

OPTIONS = dict(kmeans_init="kmeans++", kmeans_iters=25, cac_interval=1, cac_kl_threshold=0.0)


def quantized(learner, bits, **overrides):
    reg = QPrompt(bits=bits, **{**OPTIONS, **overrides})
    ctx = TrainContext(learner=learner)
    reg.setup(ctx)
    return reg, ctx


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_forward_tensor_has_at_most_2_to_the_b_values(tiny_backbone, classnames, bits):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    quantized(learner, bits)
    values = learner.ctx.detach().unique()
    assert 2 <= len(values) <= 2**bits
    assert torch.equal(values, values.half().float())  # the fp16 levels the artifact stores


def test_per_channel_has_at_most_2_to_the_b_values_per_prompt_vector(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    quantized(learner, 1, per_channel=True)
    assert all(len(row.unique()) <= 2 for row in learner.ctx.detach())
    assert len(learner.ctx.detach().unique()) > 2


def test_straight_through_gradient_is_the_identity(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    quantized(learner, 1)
    weights = torch.randn_like(learner.ctx)
    (learner.ctx * weights).sum().backward()
    assert torch.equal(learner.parametrizations.ctx.original.grad, weights)


def test_kmeans_finds_the_known_centroids():
    values = torch.tensor([-2.1, -2.0, -1.9, 0.9, 1.0, 1.1, 2.95, 3.05])
    for init in ("kmeans++", "quantile"):
        assert torch.allclose(kmeans_1d(values, 3, 20, init, seed=1), torch.tensor([-2.0, 1.0, 3.0]), atol=1e-6)
    # quantile start -1.925, 1.5625 splits off the three values around -2; the rest average to 1.8
    assert torch.allclose(kmeans_1d(values, 2, 50, "quantile"), torch.tensor([-2.0, (0.9 + 1 + 1.1 + 2.95 + 3.05) / 5]))
    # same seed, same centroids
    many = torch.randn(500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kmeans_1d(many, 4, 3, "kmeans++", seed=5), kmeans_1d(many, 4, 3, "kmeans++", seed=5))


def test_histogram_kl_by_hand():
    assert histogram_kl(torch.tensor([5, 5]), torch.tensor([5, 5])) == 0.0
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert histogram_kl(torch.tensor([3, 1]), torch.tensor([2, 2])) == pytest.approx(expected)


def test_cac_refits_only_when_both_conditions_hold(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    reg, _ = quantized(learner, 2, cac_interval=3, cac_kl_threshold=0.05)
    latent = learner.parametrizations.ctx.original
    codebook = reg.quantizers["ctx"].codebook.clone()
    with torch.no_grad():
        latent[: latent.shape[0] // 2].mul_(0.05)  # shrink half the values: a very different histogram
    assert histogram_kl(reg.histogram("ctx"), reg.cache["ctx"]["histogram"]) > 0.05
    reg.cac_step(2)  # KL is large but only 2 < t steps have passed
    assert torch.equal(reg.quantizers["ctx"].codebook, codebook) and reg.refits == 0
    reg.cac_step(3)  # both hold
    assert not torch.equal(reg.quantizers["ctx"].codebook, codebook) and reg.refits == 1
    assert reg.cache["ctx"]["step"] == 3
    codebook = reg.quantizers["ctx"].codebook.clone()
    reg.cac_step(10)  # interval passed, weights unchanged since the refit: KL = 0 < T_KL
    assert torch.equal(reg.quantizers["ctx"].codebook, codebook) and reg.refits == 1


def test_degenerate_setting_refits_every_step(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    reg, _ = quantized(learner, 1, cac_interval=1, cac_kl_threshold=0.0)
    for step in range(1, 4):
        reg.cac_step(step)
    assert reg.refits == 3


def test_pack_roundtrip_and_size_formula():
    g = torch.Generator().manual_seed(0)
    for bits, shape in ((1, (4, 512)), (2, (3, 5)), (4, (7,)), (8, (2, 3, 4))):
        indices = torch.randint(0, 2**bits, shape, generator=g)
        codebook = torch.randn(2**bits, generator=g)
        data = pack_quantized(indices, codebook)
        header = 11 + 4 * len(shape)
        assert len(data) == header + math.ceil(bits * math.prod(shape) / 8) + 2**bits * 2
        idx, table = unpack_quantized(data)
        assert torch.equal(idx, indices) and torch.equal(table[0], codebook.half())
    assert len(pack_quantized(torch.zeros(4, 512, dtype=torch.long), torch.zeros(2))) - 19 == 260  # QCoOp's 0.26 kB
    rows = torch.randn(3, 4, generator=g)
    indices = torch.randint(0, 4, (3, 6), generator=g)
    assert torch.equal(dequantize(*unpack_quantized(pack_quantized(indices, rows))),
                       rows.half()[torch.arange(3)[:, None], indices])


def test_save_pretrained_writes_the_packed_file_and_reloads_exact_values(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    quantized(learner, 1)
    save_pretrained(learner, tmp_path / "prompt")
    config = json.loads((tmp_path / "prompt" / "config.json").read_text())
    entry = config["encoded"]["ctx"]
    size = (tmp_path / "prompt" / entry["file"]).stat().st_size
    assert entry["bytes"] == size == (11 + 4 * 2) + math.ceil(4 * 128 / 8) + 2 * 2
    assert not (tmp_path / "prompt" / TENSORS_FILE).exists()
    reloaded = from_pretrained(tmp_path / "prompt", backbone=tiny_backbone)
    assert not parametrize.is_parametrized(reloaded)
    assert torch.equal(reloaded.ctx, learner.ctx)
    feats = torch.randn(3, 128)
    with torch.no_grad():
        assert torch.equal(reloaded(features=feats).logits, learner(features=feats).logits)


def test_cocoop_quantizes_linear_weights_not_biases(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoCoOp(tiny_backbone, classnames)
    reg, _ = quantized(learner, 2)
    assert sorted(reg.quantizers) == ["ctx", "meta_net.0.weight", "meta_net.2.weight"]
    assert len(learner.meta_net[0].bias.unique()) > 4
    save_pretrained(learner, tmp_path / "prompt")
    reloaded = from_pretrained(tmp_path / "prompt", backbone=tiny_backbone)
    for name, tensor in learner.state_dict().items():
        if name.startswith("backbone.") or "parametrizations" in name:
            continue
        assert torch.equal(reloaded.state_dict()[name], tensor)
    for name in reg.quantizers:
        owner, _, attr = name.rpartition(".")
        assert torch.equal(reloaded.get_parameter(name), getattr(learner.get_submodule(owner), attr))


def test_required_options_and_bits_are_validated():
    with pytest.raises(ConfigError, match="kmeans_iters is required"):
        QPrompt(bits=1, kmeans_init="kmeans++", cac_interval=1, cac_kl_threshold=0)
    with pytest.raises(ConfigError, match="cac_kl_threshold is required"):
        QPrompt(bits=1, kmeans_init="quantile", kmeans_iters=5, cac_interval=1)
    with pytest.raises(ConfigError, match="qprompt.bits=3 is not valid; choose one of: 1, 2, 4, 8"):
        QPrompt(bits=3, **OPTIONS)
    with pytest.raises(ConfigError, match="stats_gradient"):
        QPrompt(bits=1, stats_gradient="sometimes", **OPTIONS)


def test_coop_with_1_bit_qprompt_trains_resumes_and_saves(tmp_path, tiny_backbone, classnames):
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(1, 16, 128, generator=g), torch.arange(16) % 5
    config = TrainConfig(epochs=3, lr=0.05, batch_size=8, warmup_epochs=0)

    def run(**fit):
        torch.manual_seed(0)
        learner = CoOp(tiny_backbone, classnames, n_ctx=2)
        reg = QPrompt(bits=1, kmeans_init="kmeans++", kmeans_iters=10, cac_interval=2, cac_kl_threshold=0.0)
        trainer = Trainer(learner, config, [reg])
        return learner, reg, trainer.fit(FeatureBatches(feats, labels, 8, seed=0), **fit)

    learner, reg, history = run()
    assert len(learner.ctx.detach().unique()) <= 2
    assert history[-1]["qprompt_refits"] == reg.refits == 2  # steps 2 and 4 of 6 (t = 2, T_KL = 0)
    ckpt = tmp_path / "checkpoint.pt"
    run(checkpoint=ckpt, stop_after_epoch=1)
    resumed, resumed_reg, _ = run(checkpoint=ckpt)
    assert torch.equal(resumed.ctx, learner.ctx) and resumed_reg.refits == reg.refits
    save_pretrained(learner, tmp_path / "prompt")
    assert torch.equal(from_pretrained(tmp_path / "prompt", backbone=tiny_backbone).ctx, learner.ctx)


def test_state_dict_loads_with_weights_only(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    reg, _ = quantized(learner, 2)
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert torch.equal(state["tensors"]["ctx"]["codebook"], reg.quantizers["ctx"].codebook)


def test_storage_report_reads_the_files(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoCoOp(tiny_backbone, classnames)  # ctx (4, 128); meta_net 128->8->128 with biases
    quantized(learner, 1)
    save_pretrained(learner, tmp_path / "prompt")
    report = storage_report(tmp_path / "prompt")
    ctx = report["quantized"]["ctx"]
    assert ctx["formula_bytes"] == 4 * 128 // 8 + 2 * 2 == ctx["file_bytes"] - ctx["header_bytes"]
    assert ctx["header_bytes"] == 19 and ctx["fp16_bytes"] == 4 * 128 * 2
    assert report["quantized_bytes_without_headers"] == 68 + 2 * (8 * 128 // 8 + 4)
    assert report["full_precision_fp16_bytes"] == {"meta_net.0.bias": 16, "meta_net.2.bias": 256}
