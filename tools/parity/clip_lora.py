"""Parity of vlprompt's `clip_lora` with the official CLIP-LoRA (MaxZanella/CLIP-LoRA).

    python tools/parity/clip_lora.py --reference PATH_TO_CLIP-LoRA_CLONE [--backbone vlprompt-tiny]

The official `apply_lora` (loralib/utils.py) replaces the attention modules of a copy of the same
open_clip model (open_clip's CLIP has the OpenAI layout that `apply_lora` walks: `model.transformer`,
`model.visual.transformer`) by its `PlainMultiheadAttentionLoRA`, with the official defaults (both
towers, every block, q, k, v, r 2, alpha 1, dropout 0.25). Its A and B are then set to seeded random
values (B is zero at initialisation, which would leave A without a gradient) and copied into vlprompt's
learner. The official training step's computation (lora.py `run_lora`: the class prompts through the
updated text tower, the images through the updated image tower, normalised, scaled, cross-entropy) runs
on both sides in fp32. Printed: the largest difference of logits, loss and the gradients of every A and B,
in training mode (dropout masks switched off on both sides: their elements are drawn over differently
laid-out tensors, so they cannot match) and in evaluation mode (where the official layers merge B A
into their weights).
"""

from __future__ import annotations

import contextlib
import copy
import io
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, parser_for, print_differences, random_images
from official import import_official

from vlprompt.backbones import load_backbone
from vlprompt.learners.clip_lora import CLIPLoRA

PROJECTION_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "proj"}


def official_step(model, logit_scale, backbone, prompts, images, labels):
    """run_lora's computation of one step (fp32, no autocast): logits and loss."""
    text = model.encode_text(backbone.tokenize(prompts))
    text = text / text.norm(dim=-1, keepdim=True)
    image = model.encode_image(images)
    image = image / image.norm(dim=-1, keepdim=True)
    logits = logit_scale * image @ text.t()
    return logits, F.cross_entropy(logits, labels)


def paired_tensors(layers, ours, params):
    """(name, official tensor, our tensor) for every A and B; the official list holds the text tower's
    layers, then the image tower's, in block order."""
    towers = [("text", ours.text_updates), ("image", ours.image_updates)]
    ours_blocks = [(tower, j, updates.blocks[str(j)]) for tower, updates in towers
                   for j in sorted(int(k) for k in updates.blocks)]
    assert len(ours_blocks) == len(layers), (len(ours_blocks), len(layers))
    pairs = []
    for layer, (tower, j, block) in zip(layers, ours_blocks):
        for p in params:
            official = getattr(layer, PROJECTION_NAMES[p])
            for which in ("A", "B"):
                pairs.append((f"{tower}.{j}.{p}.{which}", getattr(official, f"w_lora_{which}"),
                              getattr(block.updates[p], f"lora_{which}").weight))
    return pairs


def main() -> None:
    parser = parser_for(__doc__, "a clone of MaxZanella/CLIP-LoRA")
    parser.add_argument("--params", nargs="+", default=["q", "k", "v"], help="projections to update (official: q k v)")
    args = parser.parse_args()
    reference = Path(args.reference)
    utils = import_official(reference / "loralib/utils.py", name="loralib.utils",
                            helpers={"loralib.layers": reference / "loralib/layers.py"})

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    classnames, template = list(PET_CLASSES), "a photo of a {}, a type of pet."  # OxfordPets' template
    prompts = [template.format(c.replace("_", " ")) for c in classnames]
    images = random_images(backbone, 8)
    labels = torch.arange(8) % len(classnames)
    logit_scale = backbone.logit_scale  # the official main.py fixes 100, OpenAI CLIP's exp(logit_scale)

    model = copy.deepcopy(backbone.model)  # the official layers replace modules: never the shared backbone
    options = types.SimpleNamespace(encoder="both", position="all", backbone="ViT-B/16", params=args.params,
                                    r=2, alpha=1, dropout_rate=0.25)
    with contextlib.redirect_stdout(io.StringIO()):  # apply_lora prints every block
        layers = utils.apply_lora(options, model)
    utils.mark_only_lora_as_trainable(model)
    ours = CLIPLoRA(backbone, classnames, templates=template, params=args.params)
    pairs = paired_tensors(layers, ours, args.params)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, official, mine in pairs:
            official.copy_(0.1 * torch.randn(official.shape, generator=generator))
            mine.copy_(official)
    dropouts = [m for m in [*model.modules(), *ours.modules()] if isinstance(m, torch.nn.Dropout)]
    for d in dropouts:  # the official forward skips its dropout when p is 0, as ours does
        d.p = 0.0

    print(f"backbone {args.backbone} ({args.pretrained}), {len(classnames)} classes, {len(images)} images, "
          f"{len(layers)} updated attention modules, params {' '.join(args.params)}, r 2, alpha 1")
    model.train()
    ref_logits, ref_loss = official_step(model, logit_scale, backbone, prompts, images, labels)
    ref_grads = torch.autograd.grad(ref_loss, [o for _, o, _ in pairs])
    out = ours.train()(images=images)
    our_loss = F.cross_entropy(out.logits, labels)
    our_grads = torch.autograd.grad(our_loss, [m for _, _, m in pairs])
    print("training mode (dropout masks off):")
    print_differences([("logits", ref_logits, out.logits), ("loss", ref_loss, our_loss)], width=20)
    grad_rows = [(f"grad {name}", r, o) for (name, _, _), r, o in zip(pairs, ref_grads, our_grads)]
    name, r, o = max(grad_rows, key=lambda row: (row[1] - row[2]).abs().max().item())
    print(f"the largest gradient difference of the {len(grad_rows)} A and B tensors:")
    print_differences([(name, r, o)], width=20)

    model.eval()  # the official LoRA layers merge B A into their weights here
    ours.eval()
    with torch.no_grad():
        ref_logits, ref_loss = official_step(model, logit_scale, backbone, prompts, images, labels)
        our_logits = ours(images=images).logits
    print("evaluation mode (official: merged weights):")
    print_differences([("logits", ref_logits, our_logits)], width=20)


if __name__ == "__main__":
    main()
