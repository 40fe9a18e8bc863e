"""Parity of vlprompt's `clip_adapter` with the official CLIP-Adapter (gaopengcuhk/CLIP-Adapter).

    python tools/parity/clip_adapter.py --reference PATH_TO_CLIP-Adapter_CLONE [--backbone vlprompt-tiny]

Both sides get the same open_clip model, the same images and the same adapter weights (drawn by the
official `Adapter` class). The official `CustomCLIP.forward` runs unchanged; only its text encoder is
given the open_clip tokenizer in place of OpenAI's `clip.tokenize` (its forward also moves the tokens to
CUDA). Printed: the largest difference of logits, cross-entropy loss and the adapter weights' gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, parser_for, random_images
from official import import_official
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.learners.clip_adapter import CLIPAdapter


class OpenClipTextEncoder(nn.Module):
    """The official TextEncoder's computation (one dataset template, underscores as spaces) on open_clip."""

    def __init__(self, backbone, template: str, classnames: list[str]):
        super().__init__()
        self.backbone, self.template, self.classnames = backbone, template, classnames

    def forward(self):
        prompts = [self.template.format(c.replace("_", " ")) for c in self.classnames]
        return self.backbone.model.encode_text(self.backbone.tokenize(prompts))


def official_model(official, backbone, template, classnames):
    """The official CustomCLIP with its attributes set as its __init__ sets them, for any feature width
    (its __init__ hard-codes RN50's 1024)."""
    model = official.CustomCLIP.__new__(official.CustomCLIP)
    nn.Module.__init__(model)
    model.image_encoder = backbone.model.visual
    model.text_encoder = OpenClipTextEncoder(backbone, template, classnames)
    model.logit_scale = backbone.model.logit_scale
    model.dtype = torch.float32
    model.adapter = official.Adapter(backbone.embed_dim, 4)
    return model


def main() -> None:
    parser = parser_for(__doc__, "a clone of gaopengcuhk/CLIP-Adapter")
    parser.add_argument("--dataset", default="OxfordPets", help="the official CUSTOM_TEMPLATES entry to use")
    args = parser.parse_args()
    official = import_official(f"{args.reference}/clip_adapter.py")
    template = official.CUSTOM_TEMPLATES[args.dataset]

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    classnames = list(PET_CLASSES)
    images = random_images(backbone, 8)
    labels = torch.arange(8) % len(classnames)

    reference = official_model(official, backbone, template, classnames)
    ours = CLIPAdapter(backbone, classnames, ratio=0.2, reduction=4, templates=template)
    with torch.no_grad():
        ours.adapter[0].weight.copy_(reference.adapter.fc[0].weight)
        ours.adapter[2].weight.copy_(reference.adapter.fc[2].weight)

    ref_logits = reference(images)
    ref_loss = F.cross_entropy(ref_logits, labels)
    ref_grads = torch.autograd.grad(ref_loss, [reference.adapter.fc[0].weight, reference.adapter.fc[2].weight])
    with torch.no_grad():
        cached = backbone.encode_image(images)  # vlprompt trains CLIP-Adapter on cached tower outputs
    our_logits = ours.train()(features=cached).logits
    our_loss = F.cross_entropy(our_logits, labels)
    our_grads = torch.autograd.grad(our_loss, [ours.adapter[0].weight, ours.adapter[2].weight])

    print(f"backbone {args.backbone} ({args.pretrained}), template {template!r}, {len(classnames)} classes, "
          f"{len(images)} images")
    print(f"logits   max |diff| {(ref_logits - our_logits).abs().max().item():.3e}  "
          f"(max |logit| {ref_logits.abs().max().item():.2f})")
    print(f"loss     |diff| {(ref_loss - our_loss).abs().item():.3e}  (loss {ref_loss.item():.4f})")
    for name, r, o in zip(("fc.0.weight", "fc.2.weight"), ref_grads, our_grads):
        print(f"grad {name}  max |diff| {(r - o).abs().max().item():.3e}  (max |grad| {r.abs().max().item():.3e})")


if __name__ == "__main__":
    main()
