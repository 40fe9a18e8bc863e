"""Parity of vlprompt's `coop+kgcoop+dekg` with the official DeKg code (cnunlp/DeKg, `trainers/DeKg.py`).

    python tools/parity/dekg.py --reference PATH_TO_DEKG_CLONE [--backbone vlprompt-tiny]

The official `CustomCLIP.forward` (its logits, KgCoOp score and HSIC score, with the official
`HSICLoss` of `trainers/loss.py`) runs unchanged on the same open_clip model, images and context. Its
CoOp parts are given vlprompt's: the prompt learner returns vlprompt's assembled CoOp prompt embeddings
and the text encoder is the open_clip text tower (CoOp's own parity is established separately), and
`ori_embedding` holds the frozen features of the KgCoOp template, as the official code computes them.
The official loss is CE + w1 * score_kg + w2 * score_kd (its `forward_backward`); vlprompt's is CE plus
the `kgcoop` and `dekg` terms. Printed: the largest differences of logits, each term, the loss and the
gradient of the context.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, PromptsOf, parser_for, print_differences, random_images, trained_coop
from official import import_official
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.dekg import DeKg
from vlprompt.regularizers.kgcoop import KgCoOp


class TextTower(nn.Module):
    """The official TextEncoder's computation on open_clip: embeddings in, features at the EOT token."""

    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def forward(self, prompts, tokenized_prompts):
        return self.learner.backbone.text(prompts, self.learner.tokens.eot)


def main() -> None:
    parser = parser_for(__doc__, "a clone of cnunlp/DeKg")
    parser.add_argument("--w1", type=float, default=8.0, help="KgCoOp weight (scripts/run.sh: 8.0)")
    parser.add_argument("--w2", type=float, default=6.0, help="HSIC weight (scripts/run.sh: 6.0)")
    args = parser.parse_args()
    root = Path(args.reference) / "trainers"
    official = import_official(root / "DeKg.py", name="trainers.DeKg", helpers={"trainers.loss": root / "loss.py"})
    template = official.CUSTOM_TEMPLATES["OxfordPets"]

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    classnames = list(PET_CLASSES)
    images = random_images(backbone, 8)
    labels = torch.arange(8) % len(classnames)

    learner = trained_coop(backbone, classnames)
    context = TrainContext(learner=learner, templates={"coop": [template], "kgcoop": [template]})

    reference = official.CustomCLIP.__new__(official.CustomCLIP)
    nn.Module.__init__(reference)
    reference.prompt_learner, reference.text_encoder = PromptsOf(learner), TextTower(learner)
    reference.tokenized_prompts = None
    reference.ori_embedding = context.zero_shot_text_features("kgcoop")
    reference.image_encoder, reference.logit_scale = backbone.model.visual, backbone.model.logit_scale
    reference.dtype, reference.hsic_loss = torch.float32, official.HSICLoss()

    ref_logits, score_kg, score_kd = reference(images)
    ref_loss = F.cross_entropy(ref_logits, labels) + args.w1 * score_kg + args.w2 * score_kd
    ref_grad, = torch.autograd.grad(ref_loss, [learner.ctx])

    outputs = learner.train()(images=images)
    kg = KgCoOp(weight=args.w1).extra_loss(context, outputs, {})["kgcoop"]
    kd = DeKg(weight=args.w2).extra_loss(context, outputs, {})["dekg"]
    our_loss = F.cross_entropy(outputs.logits, labels) + kg + kd
    our_grad, = torch.autograd.grad(our_loss, [learner.ctx])

    print(f"backbone {args.backbone} ({args.pretrained}), template {template!r}, {len(classnames)} classes, "
          f"{len(images)} images, w1 {args.w1}, w2 {args.w2}")
    rows = [("logits", ref_logits, outputs.logits), ("w1 * score_kg", args.w1 * score_kg, kg),
            ("w2 * score_kd", args.w2 * score_kd, kd), ("loss", ref_loss, our_loss), ("grad ctx", ref_grad, our_grad)]
    print_differences(rows, 14)


if __name__ == "__main__":
    main()
