"""What every parity script shares: the backbone options, identical random inputs, the report lines."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from vlprompt.learners.coop import CoOp

#: class names of the official repositories' usual example (Oxford Pets), so their templates fit
PET_CLASSES = ["abyssinian", "american_bulldog", "basset_hound", "beagle", "bengal", "birman"]


def parser_for(doc: str, reference_help: str) -> argparse.ArgumentParser:
    """--reference (the official clone), --backbone and --pretrained (the model both sides share)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help=reference_help)
    parser.add_argument("--backbone", default="vlprompt-tiny", help="an open_clip model name")
    parser.add_argument("--pretrained", default="world", help="its pretrained tag or checkpoint file")
    return parser


def random_images(backbone, count: int, seed: int = 1) -> torch.Tensor:
    """``count`` seeded random images at the backbone's input size."""
    size = backbone.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def trained_coop(backbone, classnames: list[str]) -> CoOp:
    """CoOp from "a photo of a" with its context moved by seeded noise, as if trained (so that no term sits at
    its starting value), on the plain text path that the official encoders run."""
    learner = CoOp(backbone, classnames, ctx_init="a photo of a")
    with torch.no_grad():
        learner.ctx.add_(0.05 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(2)))
    learner.shared_prefix = False
    return learner


def print_differences(rows, width: int = 16) -> None:
    """One line per (name, official tensor, vlprompt tensor): the largest difference and the scale."""
    for name, official, ours in rows:
        print(f"{name:<{width}} max |diff| {(official - ours).abs().max().item():.3e}  "
              f"(max |value| {official.abs().max().item():.3e})")


def first_per_class(records, count: int):
    """The first ``count`` records of each class: a few-shot set that an official script's own sampling
    of ``count`` per class takes whole."""
    seen: dict[int, int] = {}
    chosen = []
    for r in records:
        if seen.get(r.label, 0) < count:
            seen[r.label] = seen.get(r.label, 0) + 1
            chosen.append(r)
    return chosen


class PromptsOf(nn.Module):
    """An official CoOp-style prompt learner's output: the (K, L, W) prompt embeddings of vlprompt's current
    context, for official code that runs a prompt learner and a text encoder in sequence."""

    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def forward(self):
        return self.learner.tokens.assemble(self.learner.ctx)
