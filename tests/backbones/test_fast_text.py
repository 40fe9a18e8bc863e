"""Shared-prefix encoding equals the plain 77-token computation, features and context gradients,
for CoOp alone and with each regularizer that reads text features."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones.fast_text import encode_shared_prefix, supports_shared_prefix
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.coop import CoOp
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.kgcoop import KgCoOp
from vlprompt.regularizers.nemesis import Nemesis
from vlprompt.regularizers.npt import NPT
from vlprompt.regularizers.prograd import ProGrad

WORDS = ("red blue green small large round striped wooden metal flying spotted ancient golden quiet "
         "northern bright dark long short heavy").split()


def random_classnames(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + f" {i}" for i in range(n)]


def full_77_token_features(learner: CoOp) -> torch.Tensor:
    return learner.backbone.text(learner.tokens.assemble(learner.ctx), learner.tokens.eot, truncate=False)


@pytest.mark.parametrize("n_classes", [10, 100, 1000])
def test_features_and_context_gradients_equal_the_plain_path(tiny_backbone, n_classes):
    torch.manual_seed(n_classes)
    learner = CoOp(tiny_backbone, random_classnames(n_classes, n_classes), n_ctx=16)
    assert supports_shared_prefix(tiny_backbone.text)
    weights = torch.randn(n_classes, tiny_backbone.embed_dim)
    plain = full_77_token_features(learner)
    (g_plain,) = torch.autograd.grad((plain * weights).sum(), learner.ctx)
    fast = learner.encode_context(learner.ctx)
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), learner.ctx)
    assert (plain - fast).abs().max() < 1e-4
    assert (g_plain - g_fast).abs().max() / g_plain.abs().max() < 1e-4


def test_direct_call_matches_a_hand_built_sequence(tiny_backbone):
    torch.manual_seed(0)
    width = tiny_backbone.text.width
    prefix = torch.randn(3, width, requires_grad=True)
    suffix = torch.randn(4, 9, width)
    eot = torch.tensor([3, 7, 11, 5])  # suffix lengths 1, 5, 9, 3
    expected = tiny_backbone.text(torch.cat([prefix.expand(4, 3, width), suffix], 1), eot, truncate=False)
    got = encode_shared_prefix(tiny_backbone.text, prefix, suffix, eot)
    assert (expected - got).abs().max() < 1e-5


@pytest.mark.parametrize("make", [lambda: KgCoOp(), lambda: NPT(lambda_lmc=1.0, lambda_mmi=1.0),
                                  lambda: ProGrad(), lambda: Nemesis(beta=1, omega=1.0)])
def test_regularizer_losses_have_the_same_gradients_on_both_paths(tiny_backbone, make):
    names = random_classnames(100, 7)
    feats = torch.randn(16, tiny_backbone.embed_dim)
    labels = torch.arange(16) % 100
    grads = []
    for shared in (True, False):
        torch.manual_seed(0)
        learner = CoOp(tiny_backbone, names, n_ctx=4)
        learner.shared_prefix = shared
        reg = make()
        context = TrainContext(learner=learner)
        reg.setup(context)
        out = learner(features=feats)
        if not shared:  # the plain path of the reference: all 77 tokens
            text = F.normalize(full_77_token_features(learner), dim=-1)
            image = F.normalize(feats, dim=-1)
            out = LearnerOutput(tiny_backbone.logit_scale * image @ text.t(), image, text)
        losses = reg.extra_loss(context, out, {"features": feats, "labels": labels})
        total = F.cross_entropy(out.logits, labels) + sum(losses.values())
        (g,) = torch.autograd.grad(total, learner.learnable_tensors()["ctx"])
        grads.append(g)
    assert (grads[0] - grads[1]).abs().max() / grads[1].abs().max() < 1e-4


def test_batched_prefixes_match_one_call_per_prefix(tiny_backbone):
    torch.manual_seed(1)
    width = tiny_backbone.text.width
    prefixes = torch.randn(3, 4, width)
    suffix = torch.randn(5, 8, width)
    eot = torch.tensor([4, 9, 11, 6, 4])
    batched = encode_shared_prefix(tiny_backbone.text, prefixes, suffix, eot)
    one_by_one = torch.stack([encode_shared_prefix(tiny_backbone.text, p, suffix, eot) for p in prefixes])
    assert batched.shape == (3, 5, tiny_backbone.embed_dim)
    assert (batched - one_by_one).abs().max() < 1e-5


@pytest.mark.parametrize("n_classes", [10, 100])
def test_cocoop_shared_prefix_equals_its_plain_per_image_path(tiny_backbone, n_classes):
    """Features 1e-5; gradients of the context and the meta-net relative 1e-4 (against 77 tokens per prompt)."""
    from vlprompt.learners.cocoop import CoCoOp

    torch.manual_seed(n_classes)
    learner = CoCoOp(tiny_backbone, random_classnames(n_classes, n_classes + 1), n_ctx=4, ctx_init=None)
    with torch.no_grad():
        for p in learner.meta_net.parameters():
            p.mul_(5.0)  # a meta-net whose shifts matter
    image = F.normalize(torch.randn(6, tiny_backbone.embed_dim), dim=-1)
    weights = torch.randn(6, n_classes, tiny_backbone.embed_dim)
    tensors = list(learner.learnable_tensors().values())

    def plain_features():
        rows = [learner.backbone.text(learner.tokens.assemble(ctx), learner.tokens.eot, truncate=False)
                for ctx in learner.image_conditioned_context(image)]
        return F.normalize(torch.stack(rows), dim=-1)

    plain = plain_features()
    g_plain = torch.autograd.grad((plain * weights).sum(), tensors)
    fast = learner.text_features(image)
    g_fast = torch.autograd.grad((fast * weights).sum(), tensors)
    assert (plain - fast).abs().max() < 1e-5
    for name, a, b in zip(learner.learnable_tensors(), g_plain, g_fast):
        assert (a - b).abs().max() / a.abs().max() < 1e-4, name


@pytest.mark.parametrize("name", ["coop", "cocoop", "maple"])
def test_the_naive_way_of_the_gpu_benchmark_runs_77_tokens_and_gives_the_same_logits(tiny_backbone, name):
    """benchmarks/gpu.py times the reference's computation by turning vlprompt's text speed-ups off
    (the tower's ``truncate``, the learner's ``shared_prefix``): the logits must not change, and every
    prompt must then pass the text transformer at its full context length."""
    from vlprompt.learners.registry import build_learner

    torch.manual_seed(0)
    options = {"maple": {"prompt_depth": 3}}.get(name, {})
    learner = build_learner(name, tiny_backbone, random_classnames(12, 3), **options)
    features = torch.randn(3, tiny_backbone.embed_dim)
    images = torch.rand(3, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    lengths = []
    block = tiny_backbone.text.transformer.resblocks[0]
    handle = block.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            kwargs = {"images": images} if learner.uses_image_tower else {"features": features}
            fast = learner(**kwargs).logits
            fast_lengths, lengths[:] = list(lengths), []
            tiny_backbone.text.truncate = False
            if hasattr(learner, "shared_prefix"):
                learner.shared_prefix = False
            naive = learner(**kwargs).logits
    finally:
        handle.remove()
        tiny_backbone.text.truncate = True
    assert lengths and set(lengths) == {tiny_backbone.text.context_length}, lengths
    assert all(n < tiny_backbone.text.context_length for n in fast_lengths), fast_lengths  # (shared prefix: no block call)
    assert (fast - naive).abs().max() < 1e-4
