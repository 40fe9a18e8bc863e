"""CLIP-LoRA: low-rank attention updates against hand computations, torch's own attention with merged
weights, the frozen model, and the shared backbone left untouched."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from vlprompt.backbones.lora import AttentionUpdate, LowRankUpdate, image_tower_updates, layer_indices
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.clip_lora import CLIPLoRA
from vlprompt.learners.export import export_classifier
from vlprompt.learners.zeroshot import ZeroShotCLIP

TEMPLATE = "a photo of a {}."


def randomise(learner, scale=0.3, seed=7):
    """Every A and B away from its start (B starts at zero), as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in learner.learnable_tensors().values():
            tensor.copy_(scale * torch.randn(tensor.shape, generator=generator))


def frozen_state(backbone):
    return {k: v.clone() for k, v in backbone.state_dict().items()}


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_update_is_scaled_low_rank_product_by_hand():
    """s B A x with s = alpha / sqrt(r) (CLIP-LoRA's scale) on a 3 -> 2 projection of rank 2."""
    update = LowRankUpdate(3, 2, rank=2, alpha=2.0, dropout=0.0)
    with torch.no_grad():
        update.lora_A.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]))
        update.lora_B.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    # A x = [1 + 6, -2 + 3] = [7, 1];  B (A x) = [7 + 1, 14] = [8, 14];  s = 2 / sqrt(2)
    assert torch.allclose(update(x), math.sqrt(2.0) * torch.tensor([[8.0, 14.0]]))


def test_update_starts_at_zero_with_linear_default_a():
    update = LowRankUpdate(16, 8, rank=4, alpha=1.0, dropout=0.25)
    a, b = update.lora_A.weight, update.lora_B.weight
    assert not b.any() and a.shape == (4, 16) and b.shape == (8, 4)
    bound = 1 / math.sqrt(16)  # nn.Linear's default: Kaiming-uniform with a = sqrt(5) gives 1 / sqrt(fan_in)
    assert a.abs().max() <= bound and a.abs().max() > bound / 2


@pytest.mark.parametrize("params", [["q"], ["k", "v"], ["q", "k", "v", "o"]])
def test_updated_attention_is_torch_attention_with_merged_weights(params):
    """With dropout off, W x + s B A x equals attention whose projections are W + s B A (torch's own module)."""
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    update = AttentionUpdate(attn, params, rank=2, alpha=1.0, dropout=0.0)
    with torch.no_grad():
        for p in update.updates.values():
            p.lora_B.weight.normal_()
    merged = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    merged.load_state_dict(attn.state_dict())
    with torch.no_grad():
        for i, p in enumerate("qkv"):
            if p in params:
                u = update.updates[p]
                merged.in_proj_weight[8 * i: 8 * (i + 1)] += u.scaling * u.lora_B.weight @ u.lora_A.weight
        if "o" in params:
            u = update.updates["o"]
            merged.out_proj.weight += u.scaling * u.lora_B.weight @ u.lora_A.weight
    x = torch.randn(3, 5, 8)
    mask = torch.full((5, 5), float("-inf")).triu(1)  # the text tower's causal mask
    with torch.no_grad():
        for m in (None, mask):
            expected = merged(x, x, x, need_weights=False, attn_mask=m)[0]
            assert (update(attn, x, m) - expected).abs().max() < 1e-5


def test_positions_on_twelve_blocks_are_the_official_index_lists():
    """CLIP-LoRA's INDEX_POSITIONS_TEXT / INDEX_POSITIONS_VISION['ViT-B/16'] (loralib/utils.py)."""
    official = {"bottom": [0, 1, 2, 3], "mid": [4, 5, 6, 7], "up": [8, 9, 10, 11], "half-up": [6, 7, 8, 9, 10, 11],
                "half-bottom": [0, 1, 2, 3, 4, 5], "all": list(range(12)), "top1": [11], "top2": [10, 11],
                "top3": [9, 10, 11]}
    for position, indices in official.items():
        assert layer_indices(position, 12, "text") == indices
    assert layer_indices("half-up", 24, "image") == list(range(12, 24))  # ViT-L/14's
    assert layer_indices([3, 1], 4, "text") == [1, 3]
    with pytest.raises(ConfigError, match="block"):
        layer_indices([4], 4, "text")


@pytest.mark.parametrize("encoder", ["both", "text", "vision"])
def test_untrained_learner_is_the_frozen_model(tiny_backbone, classnames, images, encoder):
    """B = 0: the logits are zero-shot CLIP's, in training mode (dropout acts on the zero update only) too."""
    learner = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, encoder=encoder)
    zeroshot = ZeroShotCLIP(tiny_backbone, classnames, templates=TEMPLATE)
    with torch.no_grad():
        expected = zeroshot(images=images).logits
        for mode in (False, True):
            logits = learner.train(mode)(images=images).logits
            assert (logits - expected).abs().max() < 1e-5 * expected.abs().max()
        if encoder != "vision":  # the text path computes the tower's own arithmetic: equal to the last bit
            assert torch.equal(learner.text_features(), zeroshot.text_features())


def test_capabilities_follow_the_encoder(tiny_backbone, classnames):
    both = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE)
    text = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, encoder="text")
    vision = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, encoder="vision")
    assert both.uses_image_tower and vision.uses_image_tower and not text.uses_image_tower
    assert Capability.TUNED_IMAGE_TOWER in both.offers and Capability.FIXED_IMAGE_FEATURES in text.offers
    assert Capability.LEARNED_TEXT in text.offers and Capability.LEARNED_TEXT not in vision.offers
    assert all(k.startswith("text_updates.") for k in text.learnable_tensors())
    assert all(k.startswith("image_updates.") for k in vision.learnable_tensors())
    # every block of both 4-block towers, q, k and v, an A and a B each
    assert len(both.learnable_tensors()) == 2 * 4 * 3 * 2


def test_training_changes_only_the_updates_never_the_shared_backbone(tiny_backbone, classnames, images):
    before = frozen_state(tiny_backbone)
    zeroshot = ZeroShotCLIP(tiny_backbone, classnames, templates=TEMPLATE)
    with torch.no_grad():
        zeroshot_logits = zeroshot(images=images).logits
    torch.manual_seed(0)
    learner = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE)
    loss = F.cross_entropy(learner.train()(images=images).logits, torch.arange(4))
    loss.backward()
    assert all(p.grad is None for p in tiny_backbone.parameters())
    grads = {k: t.grad for k, t in learner.learnable_tensors().items()}
    assert all(g is not None for g in grads.values())
    assert all(g.abs().max() > 0 for k, g in grads.items() if k.endswith("lora_B.weight"))  # A waits until B moves

    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=4, lr=0.05, optimizer="adamw", warmup_epochs=0))
    trainer.start(None)
    start = {k: v.detach().clone() for k, v in learner.learnable_tensors().items()}
    for _ in range(3):
        trainer._step({"images": images, "labels": torch.arange(4)})
    assert all(not torch.equal(start[k], v) for k, v in learner.learnable_tensors().items())
    after = frozen_state(tiny_backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():  # another learner on the same backbone still sees the frozen towers
        assert torch.equal(ZeroShotCLIP(tiny_backbone, classnames, templates=TEMPLATE)(images=images).logits,
                           zeroshot_logits)
        assert (learner.eval()(images=images).logits - zeroshot_logits).abs().max() > 1e-3


def test_dropout_acts_on_the_update_input_in_training_only(tiny_backbone, classnames, images):
    learner = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, dropout=0.5)
    randomise(learner)
    with torch.no_grad():
        first, second = (learner.train()(images=images).logits for _ in range(2))
        assert (first - second).abs().max() > 1e-4
        evaluated = [learner.eval()(images=images).logits for _ in range(2)]
    assert torch.equal(*evaluated)


def test_checkpointed_text_chunks_replay_their_dropout_masks(tiny_backbone, classnames, monkeypatch):
    """Chunks are recomputed in the backward pass; the recomputation must draw the forward's masks again,
    or the gradients would belong to another forward: they equal those of the same chunks kept in memory."""
    from vlprompt.learners import prompts

    learner = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, encoder="text", dropout=0.5).train()
    randomise(learner)
    learner.text_chunk = 2

    def features_and_grads():
        torch.manual_seed(5)
        features = learner.text_features()
        grads = torch.autograd.grad(features.square().sum() + features[:, 0].sum(),
                                    list(learner.learnable_tensors().values()))
        return features.detach(), grads

    checkpointed = features_and_grads()
    monkeypatch.setattr(prompts, "checkpoint", lambda fn, *args, **kwargs: fn(*args))
    kept = features_and_grads()
    assert torch.equal(checkpointed[0], kept[0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(checkpointed[1], kept[1]))
    torch.manual_seed(6)
    assert not torch.equal(learner.text_features().detach(), kept[0])  # the masks do act


def test_save_and_load_round_trip(tiny_backbone, classnames, images, tmp_path):
    learner = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, position="up", params=["q", "v", "o"], r=3,
                       alpha=4.0)
    randomise(learner)
    loaded = from_pretrained(save_pretrained(learner, tmp_path / "prompt"))
    assert loaded.options() == learner.options()
    assert sorted(loaded.learnable_tensors()) == sorted(learner.learnable_tensors())
    for name, tensor in learner.learnable_tensors().items():
        assert torch.equal(loaded.learnable_tensors()[name], tensor)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images=images).logits, learner.eval()(images=images).logits)
        # a view for other classes shares the updates and leaves the trained learner's classes alone
        view = learner.for_classes(classnames[:2])
        assert view(images=images).logits.shape == (4, 2) and learner.classnames == classnames


def test_text_only_learner_exports_its_class_matrix(tiny_backbone, classnames, images, tmp_path):
    from safetensors.torch import load_file

    learner = CLIPLoRA(tiny_backbone, classnames, templates=TEMPLATE, encoder="text")
    randomise(learner, scale=0.5)
    export_classifier(learner, tmp_path / "clf")
    weights = load_file(str(tmp_path / "clf" / "classifier.safetensors"))["text_features"]
    with torch.no_grad():
        assert (weights - learner.text_features()).abs().max() < 1e-6
        expected = learner.eval()(images=images).logits
        plain = tiny_backbone.logit_scale * F.normalize(tiny_backbone.model.encode_image(images), dim=-1) @ weights.T
    assert (plain - expected).abs().max() < 1e-5 * expected.abs().max()


def test_a_resnet_image_tower_is_refused():
    """RN50's image tower has attention in its pooling layer only; the official code updates ViTs only."""
    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=2, image_size=64, width=8)
    with pytest.raises(BackboneError, match="encoder='text'"):
        image_tower_updates(resnet, "all", ["q"], 2, 1.0, 0.0)


@pytest.mark.parametrize("options, option", [
    ({"encoder": "image"}, "clip_lora.encoder"), ({"params": ["q", "x"]}, "clip_lora.params"),
    ({"params": []}, "clip_lora.params"), ({"r": 0}, "clip_lora.r"), ({"dropout": 1.0}, "clip_lora.dropout"),
    ({"position": "top"}, "clip_lora.position"), ({"position": [1, 1]}, "clip_lora.position"),
    ({"templates": "a photo"}, "zeroshot.templates|placeholder")])
def test_options_are_validated_before_any_model(options, option):
    with pytest.raises(ConfigError, match=option):
        CLIPLoRA.Config.from_mapping(options)


def test_positions_beyond_the_tower_are_refused(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="4-block"):
        CLIPLoRA(tiny_backbone, classnames, position=[2, 7])
