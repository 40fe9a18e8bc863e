"""Parity of vlprompt's `tcp+kgcoop` with the official TCP code (htyao89/Textual-based_Class-aware_prompt_tuning).

    python tools/parity/tcp.py --reference PATH_TO_TCP_CLONE [--backbone ViT-B-16-quickgelu --pretrained random]

The official `CustomCLIP.forward` (training mode: logits and CE + 8 · (1 − mean cos)), its
`PromptLearner.forward` (the meta-net's class-aware tokens, reshaped to 512 channels as the official code
hard-codes) and its `TextEncoder` with the official `TextTransformer` of `trainers/clip_text/model.py`
(the blocks that inject the tokens before block 8) run unchanged. They are given the weights of the
same open_clip model: the text blocks are loaded into the official `TextTransformer`, and the image
tower, positional embedding, final norm, projection and logit scale are the open_clip model's. What
the official `PromptLearner.__init__` computes from a CLIP it downloads to the GPU (the tokenised
prompts and their fixed token embeddings, the frozen class features of `CUSTOM_TEMPLATES_ori`) is
computed here as it does, with the official tokenizer; its meta-net, of the official layout (Linear,
the official QuickGELU, Linear), holds vlprompt's initial weights. The official code hard-codes 512
text channels and block 8, so the backbone must be ViT-B/16-sized: random weights by default (no
download), QuickGELU blocks as the official CLIP has. Printed: the largest differences of the
class-aware tokens, logits, the KgCoOp-style term, the loss and the gradient of every learned tensor.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, parser_for, print_differences, random_images
from official import import_official
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.learners.tcp import TCP
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.kgcoop import KgCoOp

DATASET = "OxfordPets"


def official_modules(reference: Path):
    """The official `trainers/tcp.py` and `trainers/clip_text/model.py`, loaded without Dassl."""
    text = reference / "trainers" / "clip_text"
    tcp = import_official(reference / "trainers" / "tcp.py", name="trainers.tcp", helpers={
        "trainers.clip_text.simple_tokenizer": text / "simple_tokenizer.py",
        "trainers.clip_text.model": text / "model.py",
        "trainers.clip_text.clip": text / "clip.py"})
    return tcp, sys.modules["trainers.clip_text.model"], sys.modules["trainers.clip_text.clip"]


def official_text_encoder(tcp, model_module, backbone):
    """The official TextEncoder over the official TextTransformer holding the open_clip text blocks."""
    tower = backbone.text
    blocks = tower.transformer.resblocks
    width, layers, heads = tower.width, len(blocks), blocks[0].attn.num_heads
    mask = model_module.CLIP.build_attention_mask(types.SimpleNamespace(context_length=tower.context_length))
    transformer = model_module.TextTransformer(width, layers, heads, mask)
    transformer.resblocks.load_state_dict(blocks.state_dict())
    clip_model = types.SimpleNamespace(transformer=transformer, positional_embedding=tower.positional_embedding,
                                       ln_final=tower.ln_final, text_projection=tower.text_projection,
                                       dtype=torch.float32)
    return tcp.TextEncoder(clip_model)


def main() -> None:
    parser = parser_for(__doc__, "a clone of htyao89/Textual-based_Class-aware_prompt_tuning")
    parser.set_defaults(backbone="ViT-B-16-quickgelu", pretrained="random")
    parser.add_argument("--weight", type=float, default=8.0, help="the KgCoOp-style weight (trainers/tcp.py: 8.0)")
    args = parser.parse_args()
    tcp, model_module, clip_module = official_modules(Path(args.reference))
    prompt_template = tcp.CUSTOM_TEMPLATES[DATASET]  # "X X X X {}, a type of pet."
    frozen_template = tcp.CUSTOM_TEMPLATES_ori[DATASET]

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    classnames = list(PET_CLASSES)
    images = random_images(backbone, 4)
    labels = torch.arange(4) % len(classnames)

    ours = TCP(backbone, classnames, n_ctx=4, layer=8, prompt_template=prompt_template.replace("X X X X ", ""),
               frozen_template=frozen_template)

    # -- the official PromptLearner, its __init__'s tensors computed as it computes them --------------------
    learner = tcp.PromptLearner.__new__(tcp.PromptLearner)
    nn.Module.__init__(learner)
    learner.ctx = ours.ctx  # the same Parameter: one gradient per side is read from its .grad field
    dim, width = backbone.embed_dim, backbone.text.width
    learner.meta_net = nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(dim, dim // 4, bias=True)), ("relu", tcp.QuickGELU()),
        ("linear2", nn.Linear(dim // 4, 4 * width, bias=True))]))
    learner.meta_net.load_state_dict(ours.meta_net.state_dict())
    with torch.no_grad():
        frozen = backbone.encode_text([frozen_template.format(c.replace("_", " ")) for c in classnames])
        learner.text_features = frozen / frozen.norm(dim=-1, keepdim=True)
        tokenized = torch.cat([clip_module.tokenize(prompt_template.format(c.replace("_", " "))) for c in classnames])
        embedding = backbone.text.embed(tokenized)
    learner.register_buffer("token_prefix", embedding[:, :1, :])
    learner.register_buffer("token_suffix", embedding[:, 1 + 4:, :])
    learner.n_cls, learner.n_ctx, learner.tokenized_prompts = len(classnames), 4, tokenized

    reference = tcp.CustomCLIP.__new__(tcp.CustomCLIP)
    nn.Module.__init__(reference)
    reference.prompt_learner, reference.tokenized_prompts = learner, tokenized
    reference.ori_embedding = learner.text_features
    reference.image_encoder, reference.logit_scale = backbone.model.visual, backbone.model.logit_scale
    reference.text_encoder = official_text_encoder(tcp, model_module, backbone)
    reference.dtype, reference.weight = torch.float32, 1.0
    reference.train()

    ref_tokens = learner()[1]
    ref_logits, ref_loss = reference(images, labels)
    ref_meta = dict(learner.meta_net.named_parameters())
    ref_grads = torch.autograd.grad(ref_loss, [ours.ctx, *ref_meta.values()])

    # -- vlprompt: the tcp learner and the kgcoop regularizer ---------------------------------------------
    context = TrainContext(learner=ours, templates={"kgcoop": [frozen_template]})
    outputs = ours.train()(images=images)
    kg = KgCoOp(weight=args.weight).extra_loss(context, outputs, {})["kgcoop"]
    our_loss = F.cross_entropy(outputs.logits, labels) + kg
    our_meta = dict(ours.meta_net.named_parameters())
    our_grads = torch.autograd.grad(our_loss, [ours.ctx, *our_meta.values()])
    ref_kg = ref_loss - F.cross_entropy(ref_logits, labels)

    print(f"backbone {args.backbone} ({args.pretrained}), prompts {prompt_template!r}, frozen {frozen_template!r}, "
          f"{len(classnames)} classes, {len(images)} images, weight {args.weight}")
    rows = [("class tokens", ref_tokens, ours.class_tokens()), ("frozen features", learner.text_features,
                                                                 ours.frozen_text),
            ("logits", ref_logits, outputs.logits), ("8 * (1 - cos)", ref_kg, kg), ("loss", ref_loss, our_loss)]
    rows += [(f"grad {name}", r, o) for name, r, o in zip(["ctx", *(f"meta_net.{n}" for n in our_meta)],
                                                          ref_grads, our_grads)]
    print_differences(rows, 30)


if __name__ == "__main__":
    main()
