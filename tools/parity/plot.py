"""Parity of vlprompt's `plot` and `plot+nemesis` with the official code: CHENGY12/PLOT (`plot-coop/trainers/plot.py`)
and ShyFoo/Nemesis (`trainers/plot_nemesis.py`).

    python tools/parity/plot.py --reference PATH_TO_PLOT_CLONE --nemesis PATH_TO_NEMESIS_CLONE [--backbone RN50]

The official `CustomCLIP.forward` runs unchanged: its prompt learner's own `forward` assembles the N x K
prompts from the same context and token embeddings, its image encoder is the official `AttentionPool2d` of
its `clip/model.py` (every position a query) on the open_clip ResNet's feature map, and its Sinkhorn is its
own. Only the text encoder is vlprompt's open_clip text tower (the official `TextEncoder` needs OpenAI's
`clip` model layout; CoOp's parity covers that tower). Nemesis' PUN and PAN terms are its trainer's own
`normalize` and `update_alpha`, given the same random positions as vlprompt's. Printed: the largest
differences of image tokens, logits, each loss term and the context's gradient, for PLOT's rule (regions
only), its ImageNet rule (plus CLIP's logits of the pooled features) and Nemesis' (pooled feature among
the regions).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, parser_for, print_differences, random_images
from official import import_official, install_framework_stand_ins
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.learners.plot import PLOT
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.nemesis import Nemesis

NEMESIS_CLIP = {"clip_plot": [], "clip_plot.clip": [], "clip_plot.simple_tokenizer": ["SimpleTokenizer"]}


class OfficialImageTokens(nn.Module):
    """The official image encoder's output (1 + HW, B, D): open_clip's ResNet trunk, then the official
    attention pool (loaded with the same weights)."""

    def __init__(self, visual, official_model):
        super().__init__()
        self.visual = visual
        pool = visual.attnpool
        spatial = int(round((pool.positional_embedding.shape[0] - 1) ** 0.5))
        self.attnpool = official_model.AttentionPool2d(spatial, pool.k_proj.in_features, pool.num_heads,
                                                       pool.c_proj.out_features)
        self.attnpool.load_state_dict(pool.state_dict())

    def forward(self, images):
        v = self.visual
        return self.attnpool(v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images))))))


class TextTower(nn.Module):
    """The official TextEncoder's computation on open_clip: embeddings in, features at each EOT token."""

    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def forward(self, prompts, tokenized_prompts):
        eot = self.learner.tokens.eot.repeat(len(prompts) // len(self.learner.tokens))
        return self.learner.backbone.text(prompts, eot)


def official_model(module, learner: PLOT, backbone, official_clip, dataset: str):
    """The official CustomCLIP and its prompt learner around vlprompt's context and token embeddings (the
    official buffers hold every class's tokens once per prompt, as its tokenised prompts are repeated N times)."""
    n, k = learner.ctx.shape[0], len(learner.classnames)
    prompt_learner = module.PromptLearner.__new__(module.PromptLearner)
    nn.Module.__init__(prompt_learner)
    prompt_learner.ctx = learner.ctx  # the same tensor: gradients reach it from both sides
    prompt_learner.register_buffer("token_prefix", learner.tokens.token_prefix.repeat(n, 1, 1))
    prompt_learner.register_buffer("token_suffix", learner.tokens.token_suffix.repeat(n, 1, 1))
    prompt_learner.n_cls, prompt_learner.n_ctx, prompt_learner.N = k, learner.n_ctx, n
    prompt_learner.class_token_position = "end"
    model = module.CustomCLIP.__new__(module.CustomCLIP)
    nn.Module.__init__(model)
    model.n_cls, model.prompt_learner = k, prompt_learner
    model.tokenized_prompts = torch.zeros(n * k, dtype=torch.long)  # read only by the text tower stand-in
    model.image_encoder = OfficialImageTokens(backbone.visual, official_clip)
    model.text_encoder = TextTower(learner)
    model.logit_scale, model.dtype = backbone.model.logit_scale, torch.float32
    model.device = model.device1 = torch.device("cpu")
    model.N, model.dataset, model.use_uniform, model.eps, model.max_iter = n, dataset, True, 0.1, 100
    return model


def compare_plot(args, module, official_clip, backbone, images, labels, rule: str, dataset: str) -> None:
    torch.manual_seed(0)
    learner = PLOT(backbone, list(PET_CLASSES), n_prompts=args.n_prompts, n_ctx=args.n_ctx, global_feature=rule)
    learner.shared_prefix = False  # the plain path, as the official encoder runs it
    reference = official_model(module, learner, backbone, official_clip, dataset)
    ref_logits = reference(images)
    ref_loss = F.cross_entropy(ref_logits, labels)
    ref_grad, = torch.autograd.grad(ref_loss, [learner.ctx])
    ours = learner.train()(images=images).logits
    our_loss = F.cross_entropy(ours, labels)
    our_grad, = torch.autograd.grad(our_loss, [learner.ctx])
    print(f"-- plot, global_feature={rule} (official dataset {dataset!r})")
    with torch.no_grad():
        tokens = reference.image_encoder(images).permute(1, 0, 2)
    print_differences([("image tokens", tokens, backbone.encode_image_tokens(images)), ("logits", ref_logits, ours),
                       ("loss", ref_loss, our_loss), ("grad ctx", ref_grad, our_grad)], 14)


def compare_nemesis(args, module, official_clip, backbone, images, labels, beta: float) -> None:
    torch.manual_seed(0)
    learner = PLOT(backbone, list(PET_CLASSES), n_prompts=args.n_prompts, n_ctx=args.n_ctx, global_feature="transport")
    learner.shared_prefix = False
    with torch.no_grad():  # as if trained, so that rescaling a position changes some predictions
        learner.ctx.mul_(30)
    model = official_model(module, learner, backbone, official_clip, "Caltech101")
    cfg = SimpleNamespace(TRAINER=SimpleNamespace(PLOTNemesis=SimpleNamespace(
        A=args.omega, NT="two", NP=args.n_positions, CW=args.tau, BETA=beta)), DATASET=SimpleNamespace(NAME="Caltech101"))
    trainer = module.PLOTNemesis.__new__(module.PLOTNemesis)
    trainer.cfg, trainer.model, trainer.device = cfg, model, torch.device("cpu")
    trainer.epoch, trainer.max_epoch = 2, 10
    omega = trainer.omega_schedule()

    random.seed(5)
    if beta == 1:
        trainer.pos_alpha = args.omega * torch.ones(learner.ctx.shape[-2])
    else:
        trainer.update_alpha(images, labels, args.tau)
    ref_alpha = trainer.pos_alpha.clone()
    ref_term = omega * trainer.normalize(trainer.pos_alpha)
    ref_logits = model(images)
    ref_loss = F.cross_entropy(ref_logits, labels) + ref_term
    ref_grad, = torch.autograd.grad(ref_loss, [learner.ctx])

    nemesis = Nemesis(beta=beta, omega=args.omega, n_positions=args.n_positions, tau=args.tau)
    context = TrainContext(learner=learner, dataset="Caltech101", epoch=2, max_epochs=10)
    nemesis.setup(context)
    nemesis._rng.seed(5)
    features = backbone.encode_image_tokens(images)
    outputs = learner.train()(features=features)
    terms = nemesis.extra_loss(context, outputs, {"features": features, "labels": labels})
    our_term = sum(terms.values())
    our_loss = F.cross_entropy(outputs.logits, labels) + our_term
    our_grad, = torch.autograd.grad(our_loss, [learner.ctx])
    name = "PUN" if beta == 1 else "PAN"
    print(f"-- plot+nemesis, {name} (beta={beta}, omega={args.omega}, n_positions={args.n_positions}, tau={args.tau}); "
          f"official alpha {ref_alpha.tolist()}")
    rows = [("logits", ref_logits, outputs.logits), (f"{name} term", ref_term, our_term), ("loss", ref_loss, our_loss),
            ("grad ctx", ref_grad, our_grad)]
    if beta == 0:
        ours_alpha = nemesis._weight_sum.to(ref_alpha.dtype)  # the weights of the one step taken
        rows.insert(0, ("PAN weights", ref_alpha, ours_alpha))
    print_differences(rows, 14)


def main() -> None:
    parser = parser_for(__doc__, "a clone of CHENGY12/PLOT")
    parser.set_defaults(backbone="RN50", pretrained="random")
    parser.add_argument("--nemesis", required=True, help="a clone of ShyFoo/Nemesis")
    parser.add_argument("--n-prompts", type=int, default=4, help="N (scripts: 4)")
    parser.add_argument("--n-ctx", type=int, default=16, help="M (scripts: 16)")
    parser.add_argument("--omega", type=float, default=1.0, help="Nemesis' A")
    parser.add_argument("--n-positions", type=int, default=4, help="Nemesis' NP (PAN)")
    parser.add_argument("--tau", type=float, default=0.001, help="Nemesis' CW (PAN)")
    args = parser.parse_args()

    plot_root, nemesis_root = Path(args.reference) / "plot-coop", Path(args.nemesis)
    official_clip = import_official(plot_root / "clip" / "model.py", name="clip.model")
    plot = import_official(plot_root / "trainers" / "plot.py", name="plot_official")
    install_framework_stand_ins(NEMESIS_CLIP)
    sys.modules["clip_plot"].clip = sys.modules["clip_plot.clip"]
    plot_nemesis = import_official(nemesis_root / "trainers" / "plot_nemesis.py", name="plot_nemesis_official",
                                   stand_ins=NEMESIS_CLIP)

    backbone = load_backbone(args.backbone, args.pretrained, seed=0)
    images = random_images(backbone, 6)
    labels = torch.arange(6) % len(PET_CLASSES)
    print(f"backbone {args.backbone} ({args.pretrained}), {len(PET_CLASSES)} classes, {len(images)} images, "
          f"N={args.n_prompts}, M={args.n_ctx}")
    compare_plot(args, plot, official_clip, backbone, images, labels, "off", "OxfordPets")
    compare_plot(args, plot, official_clip, backbone, images, labels, "logits", "ImageNet")
    compare_plot(args, plot_nemesis, official_clip, backbone, images, labels, "transport", "OxfordPets")
    compare_nemesis(args, plot_nemesis, official_clip, backbone, images, labels, beta=1.0)
    compare_nemesis(args, plot_nemesis, official_clip, backbone, images, labels, beta=0.0)


if __name__ == "__main__":
    main()
