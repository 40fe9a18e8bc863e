"""An exported classifier, used by plain open_clip code (the model's own encode_image and a matrix
product), predicts what `vlprompt predict` predicts."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from vlprompt.cli.main import main
from vlprompt.data.transforms import eval_transform
from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.coop import CoOp


def test_exported_classifier_predicts_like_vlprompt_predict(tiny_backbone, classnames, image_folder_factory, tmp_path,
                                                            capsys):
    torch.manual_seed(3)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    with torch.no_grad():
        learner.ctx.normal_(0, 0.5)  # a context far from its start, so the classifier is the learned one
    prompt = save_pretrained(learner, tmp_path / "prompt")
    subset = classnames[1:4]
    assert main(["export", "--prompt", str(prompt), "--classes", ",".join(subset), "--out", str(tmp_path / "clf")]) == 0
    images = sorted((image_folder_factory(tmp_path / "imgs", classnames, per_class=2) / "test").rglob("*.png"))
    assert main(["predict", "--prompt", str(prompt), "--classes", ",".join(subset), "--top-k", "1",
                 *map(str, images)]) == 0
    predicted = [line.split(": ", 1)[1].rsplit(" ", 1)[0] for line in capsys.readouterr().out.splitlines()
                 if line.startswith(str(tmp_path / "imgs"))]

    # what a user without vlprompt writes: the open_clip model, the matrix and the scale
    weights = load_file(str(tmp_path / "clf" / "classifier.safetensors"))["text_features"]
    meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    model = tiny_backbone.model  # an open_clip CLIP module
    preprocess = eval_transform(tiny_backbone)
    batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
    with torch.no_grad():
        logits = meta["logit_scale"] * F.normalize(model.encode_image(batch), dim=-1) @ weights.T
    plain = [meta["classnames"][i] for i in logits.argmax(-1).tolist()]
    assert meta["classnames"] == subset and weights.shape == (3, tiny_backbone.embed_dim)
    assert meta["backbone"]["sha256"] == tiny_backbone.identity.sha256
    assert plain == predicted and len(set(plain)) > 1
