"""Parity of vlprompt's `mmrl+mmrl_loss` with the official MMRL and MMRL++ code (yunncheng/MMRL).

    python tools/parity/mmrl.py --reference PATH_TO_MMRL_CLONE [--variant mmrl|mmrl++]
                                [--backbone ViT-B-16-quickgelu --pretrained random]

MMRL++ (`--variant mmrl++`) runs `trainers/mmrlpp.py` and `clip/model_mmrlpp.py` the same way; its
low-rank factors B start at zero, so the script sets every B to small random values on both sides
(A @ B then differs from zero and each factor has a gradient to compare).

The official `CustomCLIP` (its `MultiModalRepresentationLearner`, `TextEncoder_MMRL` and the MMRL blocks of
`clip/model_mmrl.py` that insert and replace the representation tokens in both towers) and `MMRL_Loss` run
unchanged on a CLIP that the official `build_model_MMRL` builds from the open_clip model's own weights;
the frozen model beside it (zero-shot image tower, `TextEncoder_CLIP`) is the same builder's "CLIP" mode on
the same weights. The official learned tensors (representation tokens, the per-block maps and `proj_rep`)
hold vlprompt's initial values. The official logits use a fixed scale of 100, so the open_clip model's
logit scale is set to 100 for both sides, and its weights are rounded to fp16 values, which the official
builder's `convert_weights` does before the trainer's `.float()`. Printed: the largest differences of the training loss, of the
logits of both inference paths (base: fusion, new: class token) and of the gradient of every learned tensor.
The official code builds ViT CLIPs with QuickGELU blocks, hence the default backbone (random weights).
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, parser_for, print_differences, random_images
from official import import_official

from vlprompt.backbones import load_backbone
from vlprompt.learners.mmrl import MMRL
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.mmrl_loss import MMRLLoss

DATASET = "OxfordPets"


def official_modules(reference: Path, variant: str):
    """The official trainer (`trainers/mmrl.py` or `mmrlpp.py`) and its `clip` package, loaded without
    Dassl or a download."""
    clip = reference / "clip"
    trainer = "mmrlpp" if variant == "mmrl++" else "mmrl"
    mmrl = import_official(reference / "trainers" / f"{trainer}.py", name=f"trainers.{trainer}", helpers={
        "clip.simple_tokenizer": clip / "simple_tokenizer.py", "clip.model": clip / "model.py",
        "clip.model_mmrl": clip / "model_mmrl.py", "clip.model_mmrlpp": clip / "model_mmrlpp.py",
        "clip.clip": clip / "clip.py"})
    mmrl.clip = sys.modules["clip.clip"]  # its `from clip import clip` met the stand-in package first
    return mmrl, mmrl.clip


def config(variant: str, n_tokens: int, rep_dim: int, layers: list[int], alpha: float, beta: float, size: int):
    ns = types.SimpleNamespace
    trainer = ns(ALPHA=alpha, BETA=beta, N_REP_TOKENS=n_tokens, REP_LAYERS=layers, REP_DIM=rep_dim, RES_LORA_DIM=4,
                 PROJ_LORA_DIM=64)
    key = "MMRLpp" if variant == "mmrl++" else "MMRL"
    return ns(TRAINER=ns(**{key: trainer}), INPUT=ns(SIZE=(size, size)), DATASET=ns(NAME=DATASET))


def official_tensors(reference, variant: str) -> dict:
    """The official learned tensors under vlprompt's names."""
    learner = reference.representation_learner
    tensors = {"rep_tokens": learner.compound_rep_tokens}
    if variant == "mmrl++":
        tensors.update({"proj_A": reference.image_encoder.A, "proj_B": reference.image_encoder.B})
        for side, maps in (("to_text", learner.srra_r2tproj), ("to_image", learner.srra_r2vproj)):
            tensors[f"{side}.weight"] = maps.weight
            for i, m in enumerate(maps.srra):
                tensors.update({f"{side}.A.{i}": m.A, f"{side}.B.{i}": m.B, f"{side}.bias.{i}": m.bias})
        return tensors
    tensors["proj_rep"] = reference.image_encoder.proj_rep
    for side, maps in (("to_text", learner.compound_rep_tokens_r2tproj),
                       ("to_image", learner.compound_rep_tokens_r2vproj)):
        for i, m in enumerate(maps):
            tensors.update({f"{side}.{i}.weight": m.weight, f"{side}.{i}.bias": m.bias})
    return tensors


def main() -> None:
    parser = parser_for(__doc__, "a clone of yunncheng/MMRL")
    parser.set_defaults(backbone="ViT-B-16-quickgelu", pretrained="random")
    parser.add_argument("--weight", type=float, default=1.0, help="REG_WEIGHT (vit_b16.yaml: 1.0)")
    parser.add_argument("--alpha", type=float, default=0.7, help="ALPHA (vit_b16.yaml: 0.7)")
    parser.add_argument("--first-block", type=int, default=5, help="0-based first receiving block (MMRL: 5)")
    parser.add_argument("--variant", choices=["mmrl", "mmrl++"], default="mmrl")
    parser.add_argument("--beta", type=float, default=0.9, help="MMRL++'s BETA (vit_b16.yaml: 0.9)")
    args = parser.parse_args()
    mmrl, clip = official_modules(Path(args.reference), args.variant)
    plus = args.variant == "mmrl++"

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    with torch.no_grad():
        for p in backbone.model.parameters():  # the official builder stores CLIP in fp16 (convert_weights)
            p.copy_(p.half().float())  # before the trainer's .float(): both sides hold these values
        backbone.model.logit_scale.fill_(math.log(100.0))  # the official logits' fixed scale
    classnames = list(PET_CLASSES)
    images = random_images(backbone, 4)
    labels = torch.arange(4) % len(classnames)
    template = mmrl.CUSTOM_TEMPLATES[DATASET]
    ours = MMRL(backbone, classnames, n_tokens=5, rep_dim=512, first_block=args.first_block, alpha=args.alpha,
                template=template, variant=args.variant, beta=args.beta)
    ours_tensors = ours.learnable_tensors()
    if plus:
        with torch.no_grad():
            for name, t in ours_tensors.items():
                if name.endswith("B") or ".B." in name:
                    t.normal_(0.0, 0.02)
    layers = [j + 1 for j in ours.blocks]  # the official REP_LAYERS count from 1

    # -- the official model on the open_clip weights, its learned tensors set to ours ------------------------
    state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items() if k != "attn_mask"}
    size = backbone.visual.image_size[0]

    def build(model: str):
        details = {"model": model, "rep_tokens_layers": layers, "n_rep_tokens": 5, "proj_lora_dim": 64,
                   "beta": args.beta}
        builder = clip.build_model_MMRLpp if plus else clip.build_model_MMRL
        return builder(dict(state), details).float()

    clip_model, zero_shot = build("MMRLpp" if plus else "MMRL"), build("CLIP")
    reference = mmrl.CustomCLIP(config(args.variant, 5, 512, layers, args.alpha, args.beta, size), classnames,
                                clip_model)
    official_params = official_tensors(reference, args.variant)
    with torch.no_grad():
        for name, t in official_params.items():
            t.copy_(ours_tensors[name])
        text_clip = mmrl.TextEncoder_CLIP(zero_shot)(zero_shot.token_embedding(reference.tokenized_prompts),
                                                     reference.tokenized_prompts)
        text_clip = text_clip / text_clip.norm(dim=-1, keepdim=True)
        image_clip = zero_shot.visual(images)
        image_clip = image_clip / image_clip.norm(dim=-1, keepdim=True)

    reference.train()
    logits, logits_rep, _, image_features, text_features = reference(images)
    loss = mmrl.MMRLpp_Loss if plus else mmrl.MMRL_Loss
    ref_loss = loss(reg_weight=args.weight, alpha=args.alpha)(
        logits, logits_rep, image_features, text_features, image_clip, text_clip, labels)
    ref_grads = torch.autograd.grad(ref_loss, list(official_params.values()))
    reference.eval()
    with torch.no_grad():
        ref_new, _, ref_base, _, _ = reference(images)

    # -- vlprompt: the mmrl learner and the mmrl_loss regularizer ------------------------------------------
    outputs = ours.train()(images=images)
    terms = MMRLLoss(weight=args.weight).extra_loss(TrainContext(learner=ours), outputs,
                                                    {"images": images, "labels": labels})
    our_loss = F.cross_entropy(outputs.logits, labels) + sum(terms.values())
    our_grads = torch.autograd.grad(our_loss, [ours_tensors[n] for n in official_params])
    ours.eval()
    scores = {}
    with torch.no_grad():
        for split in ("base", "new"):
            ours.set_inference_split(split)
            scores[split] = ours(images=images).logits

    print(f"{args.variant}: backbone {args.backbone} ({args.pretrained}), template {template!r}, {len(classnames)} "
          f"classes, {len(images)} images, tokens 5 x 512 in blocks {ours.blocks}, alpha {args.alpha}, weight "
          f"{args.weight}" + (f", beta {args.beta}" if plus else ""))
    rows = [("frozen text", text_clip, ours.frozen_text), ("text features", text_features, outputs.text_features),
            ("image features", image_features, outputs.image_features),
            ("train logits", logits, outputs.extras["class_token_logits"]),
            ("train rep logits", logits_rep, outputs.extras["representation_logits"]),
            ("loss", ref_loss, our_loss),
            ("base logits", ref_base, scores["base"]), ("new logits", ref_new, scores["new"])]
    rows += [(f"grad {name}", r, o) for name, r, o in zip(official_params, ref_grads, our_grads)]
    print_differences(rows, 22)


if __name__ == "__main__":
    main()
