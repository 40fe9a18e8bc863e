"""Learners against open_clip's own forward and the reference's prompt layout (methods.md §1.1-§3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.cocoop import CoCoOp
from vlprompt.learners.coop import CoOp
from vlprompt.learners.registry import build_learner
from vlprompt.learners.zeroshot import ZeroShotCLIP


def open_clip_cosine_logits(backbone, images, strings):
    model = backbone.model
    with torch.no_grad():
        f = model.encode_image(images, normalize=True)
        t = model.encode_text(backbone.tokenize(strings), normalize=True)
    return model.logit_scale.exp() * f @ t.t()


def test_zero_shot_logits_equal_open_clip(tiny_backbone, classnames):
    images = torch.randn(3, 3, 64, 64)
    learner = ZeroShotCLIP(tiny_backbone, classnames, templates="a photo of a {}.")
    with torch.no_grad():
        ours = learner(images=images).logits
    expected = open_clip_cosine_logits(
        tiny_backbone, images, [f"a photo of a {c.replace('_', ' ')}." for c in classnames]
    )
    assert (ours - expected).abs().max() < 1e-5


def test_zero_shot_ensemble_is_renormalised_mean(tiny_backbone, classnames):
    templates = ["a photo of a {}.", "itap of a {}.", "a {} in a video game."]
    learner = ZeroShotCLIP(tiny_backbone, classnames, templates=templates)
    per = [F.normalize(tiny_backbone.model.encode_text(tiny_backbone.tokenize(
        [t.format(c.replace("_", " ")) for c in classnames])), dim=-1) for t in templates]
    expected = F.normalize(torch.stack(per).mean(0), dim=-1)
    assert (learner.text_features() - expected).abs().max() < 1e-5


def test_coop_word_init_equals_hand_crafted_string(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a", class_token_position="end")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, tiny_backbone.text.width)
    with torch.no_grad():
        ours = learner.text_features()
        expected = F.normalize(tiny_backbone.model.encode_text(
            tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])), dim=-1)
    assert (ours - expected).abs().max() < 1e-5


def test_coop_template_init_is_prograd_zeros_then_prefix(tiny_backbone, classnames):
    strings = [f"a photo of a {c.replace('_', ' ')}." for c in classnames]
    with torch.no_grad():
        expected = F.normalize(tiny_backbone.model.encode_text(tiny_backbone.tokenize(strings)), dim=-1)
        # with exactly as many vectors as prefix words, the prompt is the template itself
        learner = CoOp(tiny_backbone, classnames, n_ctx=4, ctx_init_template="a photo of a {}.")
        assert (learner.text_features() - expected).abs().max() < 1e-5
        learner = CoOp(tiny_backbone, classnames, n_ctx=6, ctx_init_template="a photo of a {}.")
    assert learner.placeholder == "X X a photo of a" and learner.ctx.shape == (6, tiny_backbone.text.width)
    assert not learner.ctx[:2].any()
    assert learner.options()["ctx_init_template"] == "a photo of a {}."


def test_template_init_from_the_dataset_and_its_refusals(tiny_backbone, classnames):
    learner = build_learner("coop", tiny_backbone, classnames, "a type of pet, a photo of a {}.",
                            ctx_init_template="dataset")
    assert learner.ctx_init_template == "a type of pet, a photo of a {}." and learner.n_ctx == 16
    with pytest.raises(ConfigError, match="set only one"):
        build_learner("coop", tiny_backbone, classnames, ctx_init="a photo of a", ctx_init_template="{} x {}.")
    with pytest.raises(ConfigError, match="hand-crafted template"):
        build_learner("coop", tiny_backbone, classnames, None, ctx_init_template="dataset")
    with pytest.raises(ConfigError, match="class name must come last"):
        build_learner("coop", tiny_backbone, classnames, ctx_init_template="{} texture.")


def _ids_to_embedding_rows(backbone, strings):
    ids = backbone.tokenize(strings)
    return backbone.text.embed(ids), backbone.text.eot_positions(ids)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_class_token_positions_place_tokens_like_the_reference(tiny_backbone, classnames, position):
    """With the context set to the embeddings of known words, the assembled prompt equals that sentence."""
    m = 4
    words = ["cat", "dog", "sun", "car"]  # each is a single BPE token
    learner = CoOp(tiny_backbone, classnames, n_ctx=m, class_token_position=position)
    word_emb, _ = _ids_to_embedding_rows(tiny_backbone, [" ".join(words)])
    with torch.no_grad():
        learner.ctx.copy_(word_emb[0, 1 : 1 + m])
        assembled = learner.tokens.assemble(learner.ctx)
    for k, c in enumerate(classnames):
        name = c.replace("_", " ")
        sentence = {
            "end": f"{' '.join(words)} {name}.",
            "middle": f"{' '.join(words[: m // 2])} {name} {' '.join(words[m // 2:])}.",
            "front": f"{name} {' '.join(words)}.",
        }[position]
        expected, eot = _ids_to_embedding_rows(tiny_backbone, [sentence])
        length = int(eot[0]) + 1
        assert torch.equal(assembled[k, :length], expected[0, :length]), (position, c)
        assert int(learner.tokens.eot[k]) == int(eot[0])


def test_class_specific_context_has_one_context_per_class(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=3, csc=True)
    assert learner.ctx.shape == (len(classnames), 3, tiny_backbone.text.width)
    assert 0.01 < float(learner.ctx.detach().std()) < 0.03  # N(0, 0.02^2) initialisation
    with torch.no_grad():
        assembled = learner.tokens.assemble(learner.ctx)
    for k in range(len(classnames)):
        assert torch.equal(assembled[k, 1:4], learner.ctx[k])
    # changing class k's context changes only class k's text feature
    before = learner.text_features().detach()
    with torch.no_grad():
        learner.ctx[2] += torch.randn_like(learner.ctx[2])  # (a constant shift would vanish in LayerNorm)
    after = learner.text_features().detach()
    changed = (after - before).abs().amax(-1) > 1e-6
    assert changed.tolist() == [k == 2 for k in range(len(classnames))]


def test_csc_with_word_init_is_ignored_like_the_reference(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a", csc=True)
    assert not learner.csc and learner.ctx.dim() == 2


def test_cocoop_prompts_depend_on_the_image_and_train_the_meta_net(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoCoOp(tiny_backbone, classnames)
    feats = torch.randn(2, tiny_backbone.embed_dim)
    out = learner(features=feats)
    assert out.text_features.shape == (2, len(classnames), tiny_backbone.embed_dim)
    assert (out.text_features[0] - out.text_features[1]).abs().max() > 1e-4
    F.cross_entropy(out.logits, torch.tensor([0, 3])).backward()
    for name, p in learner.meta_net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert learner.ctx.grad.abs().sum() > 0
    # an image whose meta-net shift is zero gets exactly the plain context
    with torch.no_grad():
        for p in learner.meta_net.parameters():
            p.zero_()
        plain = learner.text_features(feats)[0]
        coop = CoOp(tiny_backbone, classnames, ctx_init="a photo of a").text_features()
    assert (plain - coop).abs().max() < 1e-5


def test_build_learner_rejects_unknown_options_and_names(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="n_ctxx"):
        build_learner("coop", tiny_backbone, classnames, n_ctxx=4)
    with pytest.raises(ConfigError, match="coop"):
        build_learner("cooop", tiny_backbone, classnames)
    with pytest.raises(ConfigError, match="class_token_position"):
        build_learner("coop", tiny_backbone, classnames, class_token_position="back")


def test_class_specific_contexts_follow_their_classes_in_another_order(tiny_backbone, classnames, tmp_path):
    from vlprompt.learners.artifact import from_pretrained, save_pretrained

    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=3, csc=True)
    f = torch.randn(4, tiny_backbone.embed_dim)
    with torch.no_grad():
        logits = learner(features=f).logits
        reordered = learner.for_classes(classnames[::-1])
        assert torch.allclose(reordered(features=f).logits, logits.flip(-1), atol=1e-5)
        assert torch.allclose(reordered.for_classes(classnames)(features=f).logits, logits, atol=1e-5)
        loaded = from_pretrained(save_pretrained(learner, tmp_path / "csc"), classnames=classnames[::-1])
        assert torch.allclose(loaded(features=f).logits, logits.flip(-1), atol=1e-5)
    with pytest.raises(ConfigError, match="'grey cube'"):
        learner.for_classes(classnames[:-1] + ["grey cube"])
