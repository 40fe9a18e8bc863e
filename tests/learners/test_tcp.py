"""TCP (docs/methods/tcp.md): class-aware tokens from a meta-net of the frozen class features, injected
at a middle text block.

The oracle is open_clip itself: its own ``encode_text`` on token ids, with a forward pre-hook on the
block where the tokens enter that edits the hidden states it receives (independent of the block
runner under test).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.api import create_method
from vlprompt.backbones.deep_prompts import encode_text_injected
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.coop import CoOp
from vlprompt.learners.tcp import TCP, TCPConfig


def open_clip_with_edit(backbone, sentences: list[str], layer: int, edit) -> torch.Tensor:
    """open_clip's normalised text features of ``sentences``, the hidden states entering block ``layer``
    replaced by ``edit(hidden)``."""
    block = backbone.text.transformer.resblocks[layer]

    def pre_hook(_module, args, kwargs):
        return (edit(args[0]), *args[1:]), kwargs

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            return F.normalize(backbone.model.encode_text(backbone.tokenize(sentences)), dim=-1)
    finally:
        handle.remove()


def test_injection_sets_positions_at_the_given_block_as_a_hand_edit_of_open_clip(tiny_backbone):
    sentences = ["a photo of a red circle.", "two small blue stars on a table"]
    tower = tiny_backbone.text
    ids = tiny_backbone.tokenize(sentences)
    tokens = torch.randn(2, 3, tower.width, generator=torch.Generator().manual_seed(1))  # one set per row
    mix = 0.25

    def edit(x):
        x = x.clone()
        x[:, 2:5] = mix * tokens + (1 - mix) * x[:, 2:5]
        return x

    expected = open_clip_with_edit(tiny_backbone, sentences, 2, edit)
    with torch.no_grad():
        ours = encode_text_injected(tower, tower.embed(ids), tower.eot_positions(ids), 2, tokens, start=2, mix=mix)
        plain = F.normalize(tiny_backbone.model.encode_text(ids), dim=-1)
    assert (F.normalize(ours, dim=-1) - expected).abs().max() < 1e-5
    assert (expected - plain).abs().max() > 1e-3  # the edit matters


def test_injection_refuses_a_block_the_tower_lacks_and_an_end_of_text_position(tiny_backbone):
    tower = tiny_backbone.text
    ids = tiny_backbone.tokenize(["a red circle"])
    emb, eot = tower.embed(ids), tower.eot_positions(ids)
    with pytest.raises(BackboneError, match="4 blocks"):
        encode_text_injected(tower, emb, eot, 4, torch.zeros(2, tower.width))
    with pytest.raises(BackboneError, match="end-of-text"):
        encode_text_injected(tower, emb, eot, 1, torch.zeros(int(eot[0]), tower.width))


def zero_meta_net(learner: TCP) -> None:
    with torch.no_grad():
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()


@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_zero_class_tokens_leave_coops_prompt_with_its_context_states_scaled(tiny_backbone, classnames, mix):
    """With a zero meta-net output TCP is CoOp whose context states entering the block are scaled by
    1 - mix: CoOp itself at mix 0, its context states replaced by zeros at TCP's mix 1."""
    tcp = TCP(tiny_backbone, classnames, ctx_init="a photo of a", layer=2, mix=mix,
              prompt_template="{}, a type of shape.")
    zero_meta_net(tcp)

    def edit(x):
        x = x.clone()
        x[:, 1:5] = (1 - mix) * x[:, 1:5]
        return x

    sentences = [f"a photo of a {c.replace('_', ' ')}, a type of shape." for c in classnames]
    expected = open_clip_with_edit(tiny_backbone, sentences, 2, edit)
    with torch.no_grad():
        assert (tcp.text_features() - expected).abs().max() < 1e-5


def test_tcp_at_mix_zero_is_coop_with_the_same_context(tiny_backbone, classnames):
    tcp = TCP(tiny_backbone, classnames, n_ctx=4, layer=1, mix=0.0)
    coop = CoOp(tiny_backbone, classnames, n_ctx=4)
    with torch.no_grad():
        tcp.ctx.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
        coop.ctx.copy_(tcp.ctx)
        features = F.normalize(torch.randn(6, tiny_backbone.embed_dim), dim=-1)
        assert (tcp(features=features).logits - coop(features=features).logits).abs().max() < 1e-4


def test_class_tokens_are_the_meta_net_of_each_frozen_class_feature(tiny_backbone, classnames):
    tcp = TCP(tiny_backbone, classnames, layer=2, frozen_template="a drawing of a {}.")
    with torch.no_grad():
        frozen = F.normalize(tiny_backbone.model.encode_text(
            tiny_backbone.tokenize([f"a drawing of a {c.replace('_', ' ')}." for c in classnames])), dim=-1)
        assert (tcp.frozen_text - frozen).abs().max() < 1e-6
        hidden = tcp.meta_net.linear1(tcp.frozen_text)
        by_hand = tcp.meta_net.linear2(hidden * torch.sigmoid(1.702 * hidden)).view(len(classnames), 4, -1)
        assert (tcp.class_tokens() - by_hand).abs().max() < 1e-6
        assert torch.equal(tcp.class_tokens()[2, 1], by_hand[2, 1])  # class 2's second token: its slice
    assert tcp.meta_net.linear1.out_features == tiny_backbone.embed_dim // 4
    assert tcp.meta_net.linear2.out_features == 4 * tiny_backbone.text.width


def test_class_tokens_enter_the_gradient_and_change_the_features(tiny_backbone, classnames):
    tcp = TCP(tiny_backbone, classnames, layer=2)
    features = F.normalize(torch.randn(4, tiny_backbone.embed_dim), dim=-1)
    loss = F.cross_entropy(tcp(features=features).logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tcp.learnable_tensors().values())


def test_new_classes_get_tokens_from_their_own_frozen_features(tiny_backbone, classnames):
    tcp = TCP(tiny_backbone, classnames, layer=2)
    new = ["orange cross", "black diamond"]
    view = tcp.for_classes(new)
    fresh = TCP(tiny_backbone, new, layer=2)
    fresh.load_state_dict(tcp.state_dict())
    with torch.no_grad():
        assert torch.equal(view.text_features(), fresh.text_features())
        assert view.class_tokens().shape[0] == 2 and tcp.class_tokens().shape[0] == len(classnames)
    assert tcp.classnames == classnames  # the trained learner is untouched


def test_options_are_validated_when_parsed():
    assert TCPConfig.from_mapping({}).n_ctx == 4
    assert TCPConfig.from_mapping({"ctx_init": "a photo of a"}).n_ctx == 4
    for bad, message in [({"layer": 0}, "tcp.layer=0"), ({"mix": 1.5}, "tcp.mix=1.5"),
                         ({"prompt_template": "a photo"}, "tcp.prompt_template"),
                         ({"frozen_template": "a {} of {}"}, "tcp.frozen_template"),
                         ({"hidden": 0}, "tcp.hidden=0"), ({"n_ctx": 2, "ctx_init": "a photo of a"}, "conflicts"),
                         ({"layers": 3}, "layers")]:
        with pytest.raises(ConfigError, match=message):
            TCPConfig.from_mapping(bad)


def test_a_block_beyond_the_text_tower_is_refused_naming_the_valid_range(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="between 1 and 3"):
        TCP(tiny_backbone, classnames)  # TCP's block 8; the tiny text tower has 4


def test_kgcoop_composes_and_class_prototype_regularizers_are_refused(tiny_backbone, classnames):
    method = create_method("tcp+kgcoop+dekg", tiny_backbone, classnames, learner={"layer": 3})
    assert [r.name for r in method.regularizers] == ["kgcoop", "dekg"]
    with pytest.raises(ConfigError, match="class_prototypes"):
        create_method("tcp+clap", tiny_backbone, classnames, learner={"layer": 3})


def test_artifact_round_trip_for_the_trained_and_for_new_classes(tiny_backbone, classnames, tmp_path):
    tcp = TCP(tiny_backbone, classnames, layer=3, mix=0.75, hidden=8, prompt_template="{}, a shape.",
              frozen_template="a drawing of a {}.")
    with torch.no_grad():
        for tensor in tcp.learnable_tensors().values():
            tensor.add_(0.2 * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(5)))
    path = save_pretrained(tcp, tmp_path / "tcp")
    new = ["orange cross", "black diamond"]
    with torch.no_grad():
        reloaded = from_pretrained(path, backbone=tiny_backbone)
        assert torch.equal(reloaded.text_features(), tcp.text_features())
        assert torch.equal(from_pretrained(path, new, tiny_backbone).text_features(),
                           tcp.for_classes(new).text_features())
    assert reloaded.config == tcp.config


def test_checkpointed_class_chunks_give_the_same_features_and_gradients(tiny_backbone, classnames):
    tcp = TCP(tiny_backbone, classnames, layer=2)
    grads = []
    for chunk in (None, 2):
        tcp.text_chunk = chunk
        tcp.zero_grad()
        features = tcp.text_features()
        features.pow(3).sum().backward()
        grads.append((features.detach(), tcp.ctx.grad.clone(), tcp.meta_net.linear2.weight.grad.clone()))
    for whole, chunked in zip(*grads):
        assert (whole - chunked).abs().max() < 1e-5 * whole.abs().max()  # float summation order only
