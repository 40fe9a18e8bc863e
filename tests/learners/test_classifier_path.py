"""A learner is its own classifier (DESIGN.md principle 2): the logits a learner gives a batch while it
trains are the logits that evaluation, a reloaded prompt (what `predict` runs) and, where exportable,
the plain exported classifier give the same images, for every registered learner."""

from __future__ import annotations

import json

import method_matrix
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from vlprompt.api import evaluate
from vlprompt.data.transforms import eval_transform
from vlprompt.engine.evaluate import predict_logits
from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.clip_adapter import CLIPAdapter
from vlprompt.learners.export import EXPORT_NEEDS, export_classifier
from vlprompt.learners.registry import LEARNERS


def as_if_trained(learner) -> None:
    """Move every learned tensor away from its initial value, so the learned classifier is the one tested."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tensor in learner.learnable_tensors().values():
            tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator))


@pytest.fixture(scope="module")
def images(tmp_path_factory, image_folder_factory, classnames):
    """A tiny image folder and its test images as the evaluation transform makes them."""
    root = image_folder_factory(tmp_path_factory.mktemp("classifier_path"), classnames, per_class=2)
    files = sorted((root / "test").rglob("*.png"))
    return root, files


@pytest.mark.parametrize("name", LEARNERS.names())
def test_training_evaluation_reload_and_export_give_the_same_logits(name, tiny_backbone, classnames, images,
                                                                    tmp_path):
    root, files = images
    torch.manual_seed(0)
    learner = method_matrix.build(name, tiny_backbone, classnames)
    as_if_trained(learner)
    batch = torch.stack([eval_transform(tiny_backbone)(Image.open(f).convert("RGB")) for f in files])
    labels = torch.tensor([classnames.index(f.parent.name) for f in files])
    with torch.no_grad():
        raw = learner.encode_images(batch)  # what the trainer's batch holds: cached features or images
        training = learner.train()(**({"images": batch} if learner.uses_image_tower else {"features": raw})).logits
        evaluated = predict_logits(learner, raw)
        reloaded = from_pretrained(save_pretrained(learner, tmp_path / "prompt"))(images=batch).logits
    assert (evaluated - training).abs().max() < 1e-6 * training.abs().max().clamp(min=1)
    assert (reloaded - training).abs().max() < 1e-6 * training.abs().max().clamp(min=1)
    metrics = evaluate(learner, f"folder:{root}")  # the public verb, from image files
    assert metrics["num_samples"] == len(files)
    assert metrics["accuracy"] == pytest.approx(100.0 * float((training.argmax(-1) == labels).float().mean()))
    if EXPORT_NEEDS <= learner.offers:
        export_classifier(learner, tmp_path / "clf")
        weights = load_file(str(tmp_path / "clf" / "classifier.safetensors"))["text_features"]
        meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
        with torch.no_grad():  # what plain open_clip code computes
            plain = meta["logit_scale"] * F.normalize(tiny_backbone.model.encode_image(batch), dim=-1) @ weights.T
        assert (plain - training).abs().max() < 1e-6 * training.abs().max().clamp(min=1)
    else:
        with pytest.raises(ConfigError, match="export cannot be used with learner"):
            export_classifier(learner, tmp_path / "clf")
        assert not (tmp_path / "clf").exists()


def test_export_is_refused_naming_why(tiny_backbone, classnames, tmp_path):
    adapter = CLIPAdapter(tiny_backbone, classnames)
    with pytest.raises(ConfigError, match="class_classifier") as err:
        export_classifier(adapter, tmp_path / "adapter")
    assert "fixed_image_features" not in str(err.value)
    maple = method_matrix.build("maple", tiny_backbone, classnames)  # one class matrix, but prompted images
    with pytest.raises(ConfigError, match="fixed_image_features") as err:
        export_classifier(maple, tmp_path / "maple")
    assert "class_classifier (" not in str(err.value)


def test_clip_adapter_scores_by_its_equation(tiny_backbone, classnames):
    """f' = r relu(W2 relu(W1 f)) + (1 - r) f on the unnormalised feature, then CLIP's cosine logits
    against the hand-crafted class features, computed here by hand."""
    torch.manual_seed(0)
    adapter = CLIPAdapter(tiny_backbone, classnames, ratio=0.6, reduction=8, templates="a photo of a {}.")
    w1, w2 = adapter.adapter[0].weight.detach(), adapter.adapter[2].weight.detach()
    assert w1.shape == (tiny_backbone.embed_dim // 8, tiny_backbone.embed_dim) and w2.shape == w1.T.shape
    f = torch.randn(3, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    blended = 0.6 * torch.relu(torch.relu(f @ w1.T) @ w2.T) + 0.4 * f
    text = F.normalize(tiny_backbone.encode_text([f"a photo of a {c.replace('_', ' ')}." for c in classnames]), dim=-1)
    expected = tiny_backbone.logit_scale * F.normalize(blended, dim=-1) @ text.T
    with torch.no_grad():
        assert (adapter(features=f).logits - expected).abs().max() < 1e-4
        # only the adapter trains; ratio 0 is zero-shot CLIP exactly
        assert sorted(adapter.learnable_tensors()) == ["adapter.0.weight", "adapter.2.weight"]
        zero = CLIPAdapter(tiny_backbone, classnames, ratio=0.0, templates="a photo of a {}.")
        zeroshot = method_matrix.build("zeroshot", tiny_backbone, classnames)
        assert torch.equal(zero(features=f).logits, zeroshot(features=f).logits)
    assert Capability.CLASS_CLASSIFIER not in adapter.offers and Capability.NEW_CLASSES in adapter.offers


@pytest.mark.parametrize("options, option", [({"ratio": 1.5}, "clip_adapter.ratio"),
                                             ({"reduction": 0}, "clip_adapter.reduction")])
def test_clip_adapter_options_are_validated(tiny_backbone, classnames, options, option):
    with pytest.raises(ConfigError, match=option):
        CLIPAdapter(tiny_backbone, classnames, **options)
