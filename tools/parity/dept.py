"""Parity of vlprompt's `coop+dept` with the official DePT code (Koorye/DePT, `trainers/elp_coop.py`).

    python tools/parity/dept.py --reference PATH_TO_DEPT_CLONE [--backbone vlprompt-tiny]

The official `CustomCLIP` of CoOp with DePT (its `_forward_base` training loss and fused base logits,
`_forward_new` logits, the official `FiLM` of `trainers/elp_maple.py` and its `nn.Linear` head) runs
unchanged on the same open_clip model, images and context, with the same random head tensors. Its CoOp
parts are given vlprompt's (as in dekg.py: vlprompt's assembled prompt embeddings and the open_clip text
tower). The official code reads the towers' raw outputs, as vlprompt's head does for CoOp (the learner
exposes them: `PromptLearner.exposes_tower_outputs`).

Printed: the largest differences of the training loss, its gradients (context, cwT scales, linear head),
and the logits told "base" (fused) and "new" (the learner's).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, PromptsOf, parser_for, print_differences, random_images, trained_coop
from official import import_official, install_framework_stand_ins
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.dept import DePT

#: modules of the DePT repository that elp_coop.py imports but this script never calls
REPOSITORY_STAND_INS = {"plotnine": [], "trainers.optim": ["build_optimizer"],
                        "trainers.coop": ["CoOp", "load_clip_to_cpu", "CustomCLIP"],
                        "trainers.maple": ["MaPLe", "load_clip_to_cpu", "CustomCLIP"]}


def load_official(reference: Path):
    install_framework_stand_ins(REPOSITORY_STAND_INS)
    import sys
    for name in ("trainers.coop", "trainers.maple"):  # the official CustomCLIPs subclass these: nn.Modules
        sys.modules[name].CustomCLIP = type("CustomCLIP", (nn.Module,), {})
    root = reference / "trainers"
    return import_official(root / "elp_coop.py", name="trainers.elp_coop",
                           helpers={"trainers.elp_maple": root / "elp_maple.py"})


def official_model(official, learner, backbone, weight: float):
    dim, classes = backbone.embed_dim, len(learner.classnames)
    model = official.CustomCLIP.__new__(official.CustomCLIP)
    nn.Module.__init__(model)
    model.subsample_classes, model.dataset = "base", "OxfordPets"
    model.lp_cfg = SimpleNamespace(TYPE="linear", WEIGHT=weight, TEST_TIME_FUSION=True)
    model.film_cfg = SimpleNamespace(LINEAR_PROBE=True)
    model.film_lp_img, model.film_lp_text = official.FiLM(dim), official.FiLM(dim)
    model.linear_probe_proj = nn.Linear(dim, classes)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # as if trained: no tensor at its starting value
        for film in (model.film_lp_img, model.film_lp_text):
            film.scale.add_(0.2 * torch.randn(dim, generator=generator))
            film.bias.add_(0.1 * torch.randn(dim, generator=generator))
    model.prompt_learner = PromptsOf(learner)
    model.text_encoder = lambda prompts, tokenized: backbone.text(prompts, learner.tokens.eot)
    model.image_encoder = backbone.model.visual
    model.tokenized_prompts, model.logit_scale, model.dtype = None, backbone.model.logit_scale, torch.float32
    return model


def copy_head(model, head) -> None:
    with torch.no_grad():
        head.image_transform.scale.copy_(model.film_lp_img.scale)
        head.image_transform.shift.copy_(model.film_lp_img.bias)
        head.text_transform.scale.copy_(model.film_lp_text.scale)
        head.text_transform.shift.copy_(model.film_lp_text.bias)
        head.linear.weight.copy_(model.linear_probe_proj.weight)
        head.linear.bias.copy_(model.linear_probe_proj.bias)


def compare(official, learner, backbone, images, labels, weight: float) -> None:
    model = official_model(official, learner, backbone, weight)
    head = learner.head
    copy_head(model, head)
    ours_ctx = TrainContext(learner=learner)
    pairs = [(learner.ctx, learner.ctx), (model.film_lp_img.scale, head.image_transform.scale),
             (model.film_lp_text.scale, head.text_transform.scale), (model.linear_probe_proj.weight, head.linear.weight)]

    model.prompt_learner.train()
    ref_loss = model(images, labels)
    ref_grads = torch.autograd.grad(ref_loss, [p for p, _ in pairs])
    learner.train()
    outputs = learner(images=images)
    our_loss = F.cross_entropy(outputs.logits, labels) + DePT(weight=weight).extra_loss(
        ours_ctx, outputs, {"labels": labels})["dept"]
    our_grads = torch.autograd.grad(our_loss, [q for _, q in pairs])

    model.prompt_learner.eval()
    learner.eval()
    with torch.no_grad():
        ref_base = model._forward_base(images)
        ref_new = model._forward_new(images)
        told = {}
        for split in ("base", "new"):
            view = learner.for_classes(learner.classnames)
            view.set_inference_split(split)
            told[split] = view(images=images).logits
    names = ["grad ctx", "grad cwT img scale", "grad cwT txt scale", "grad head weight"]
    print_differences([("loss", ref_loss, our_loss), *zip(names, ref_grads, our_grads),
                       ("logits told base", ref_base, told["base"]), ("logits told new", ref_new, told["new"])], 20)


def main() -> None:
    parser = parser_for(__doc__, "a clone of Koorye/DePT")
    parser.add_argument("--weight", type=float, default=0.7, help="TRAINER.LINEAR_PROBE.WEIGHT (train.py: 0.7)")
    args = parser.parse_args()
    official = load_official(Path(args.reference))

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    classnames = list(PET_CLASSES)
    images = random_images(backbone, 8)
    labels = torch.arange(8) % len(classnames)
    learner = trained_coop(backbone, classnames)
    DePT(weight=args.weight).setup(TrainContext(learner=learner))
    print(f"backbone {args.backbone} ({args.pretrained}), {len(classnames)} classes, {len(images)} images, "
          f"weight {args.weight}")
    compare(official, learner, backbone, images, labels, args.weight)


if __name__ == "__main__":
    main()
