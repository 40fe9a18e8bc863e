"""Seconds per CoCoOp training step: the plain per-image path against the shared-prefix path, in one run.

plain          every image's K class prompts run through the text tower as full sequences
               (truncated after the last end-of-text token, as vlprompt's plain path does)
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
from vlprompt.learners.cocoop import CoCoOp


def class_names(n: int, seed: int = 0) -> list[str]:
    words = ("red blue green small large round striped wooden metal flying spotted ancient golden quiet northern "
             "bright dark long short heavy sea mountain river bird car house tree flower dog cat").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def step_seconds(learner: CoCoOp, features: torch.Tensor, labels: torch.Tensor, shared: bool, repeats: int) -> float:
    learner.shared_prefix = shared
    optimizer = torch.optim.SGD(list(learner.learnable_tensors().values()), lr=0.002, momentum=0.9)
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        loss = F.cross_entropy(learner(features=features).logits, labels)
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
    print(f"{'classes':>8} {'plain s/step':>13} {'shared s/step':>14} {'speed-up':>9}")
    for k in args.classes:
        torch.manual_seed(k)
        learner = CoCoOp(backbone, class_names(k, k))
        features = torch.randn(args.batch, backbone.embed_dim)
        labels = torch.randint(k, (args.batch,))
        check_exact(learner, features[:1])
        plain = step_seconds(learner, features, labels, shared=False, repeats=args.repeats)
        shared = step_seconds(learner, features, labels, shared=True, repeats=args.repeats)
        print(f"{k:>8} {plain:>13.3f} {shared:>14.3f} {plain / shared:>8.1f}x")


if __name__ == "__main__":
    main()
