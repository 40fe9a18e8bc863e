"""Seconds per CoCoOp training step: the plain per-image path against the shared-prefix path, in one run.

reference      every image's K class prompts as full 77-token sequences (the reference's CoCoOp)
plain          the same prompts truncated after the last end-of-text token (vlprompt's plain path)
shared prefix  each image's start token + image-conditioned context encoded once, the K class
               suffixes packed against it (vlprompt's default)
Both paths are checked for equal features and gradients first. The image features are cached (the
image tower is frozen), so a step is the text side, the meta-net and the SGD update.

    python benchmarks/cocoop_step.py [--backbone ViT-B-16] [--classes 10 100] [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch
import torch.nn.functional as F

from vlprompt.backbones import load_backbone
from vlprompt.learners.base import clip_logits
from vlprompt.learners.cocoop import CoCoOp


def class_names(n: int, seed: int = 0) -> list[str]:
    words = ("red blue green small large round striped wooden metal flying spotted ancient golden quiet northern "
             "bright dark long short heavy sea mountain river bird car house tree flower dog cat").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def full_length_text(learner: CoCoOp, image_features: torch.Tensor) -> torch.Tensor:
    """The reference's text side: every prompt of every image at all 77 positions."""
    rows = [learner.backbone.text(learner.tokens.assemble(ctx), learner.tokens.eot, truncate=False)
            for ctx in learner.image_conditioned_context(image_features)]
    return F.normalize(torch.stack(rows), dim=-1)


def step_seconds(learner: CoCoOp, features: torch.Tensor, labels: torch.Tensor, variant: str, repeats: int) -> float:
    learner.shared_prefix = variant == "shared prefix"
    if variant == "reference":
        def forward(features):
            image = F.normalize(features, dim=-1)
            return clip_logits(image, full_length_text(learner, image), learner.backbone.logit_scale)
    else:
        def forward(features):
            return learner(features=features).logits
    optimizer = torch.optim.SGD(list(learner.learnable_tensors().values()), lr=0.002, momentum=0.9)
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        loss = F.cross_entropy(forward(features), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def check_exact(learner: CoCoOp, features: torch.Tensor) -> None:
    image = F.normalize(features, dim=-1)
    out = {}
    for shared in (True, False):
        learner.shared_prefix = shared
        text = learner.text_features(image)
        grads = torch.autograd.grad(text.sum() + (text**2).sum(), list(learner.learnable_tensors().values()))
        out[shared] = (text.detach(), grads)
    assert (out[True][0] - out[False][0]).abs().max() < 1e-4, "features differ"
    for a, b in zip(out[True][1], out[False][1]):
        assert (a - b).abs().max() <= 1e-3 * b.abs().max(), "gradients differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--batch", type=int, default=4, help="images per step (CoCoOp's configs use 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    backbone = load_backbone(args.backbone, None)  # random weights: the cost does not depend on them
    print(f"backbone {args.backbone}, batch {args.batch}, median of {args.repeats} steps")
    print(f"{'classes':>8} {'reference s':>12} {'plain s':>9} {'shared s':>9} {'vs reference':>13} {'vs plain':>9}")
    for k in args.classes:
        torch.manual_seed(k)
        learner = CoCoOp(backbone, class_names(k, k))
        features = torch.randn(args.batch, backbone.embed_dim)
        labels = torch.randint(k, (args.batch,))
        check_exact(learner, features[:1])
        ref = step_seconds(learner, features, labels, "reference", args.repeats)
        plain = step_seconds(learner, features, labels, "plain", args.repeats)
        shared = step_seconds(learner, features, labels, "shared prefix", args.repeats)
        print(f"{k:>8} {ref:>12.3f} {plain:>9.3f} {shared:>9.3f} {ref / shared:>12.1f}x {plain / shared:>8.1f}x")


if __name__ == "__main__":
    main()
