"""Training-step time with and without the image-feature cache, measured in one run.

Without the cache, every step runs the frozen image encoder on the batch (the reference way);
with it, a step reads precomputed features. Both steps then compute CoOp's text features for all
classes, the logits, cross-entropy, backward and the SGD update.

    python benchmarks/feature_cache.py [--backbone vlprompt-tiny|ViT-B-16] [--classes 100] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from threads import add_threads_argument, set_threads

from vlprompt.backbones import load_backbone
from vlprompt.learners.coop import CoOp


def time_steps(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vlprompt-tiny")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-ctx", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    add_threads_argument(parser)
    args = parser.parse_args()
    print(set_threads(args.threads), flush=True)

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, None)
    classnames = [f"class number {i}" for i in range(args.classes)]
    learner = CoOp(backbone, classnames, n_ctx=args.n_ctx)
    optimizer = torch.optim.SGD([learner.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(args.batch, 3, backbone.image_size, backbone.image_size)
    labels = torch.randint(args.classes, (args.batch,))
    with torch.no_grad():
        cached = backbone.encode_image(images)

    def step(features=None):
        out = learner(images=images if features is None else None, features=features)
        F.cross_entropy(out.logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # the same numbers both ways, before timing anything
    with torch.no_grad():
        a = learner(images=images).logits
        b = learner(features=cached).logits
    assert (a - b).abs().max() < 1e-4, "cached features change the logits"

    uncached = time_steps(lambda: step(None), args.repeats)
    with_cache = time_steps(lambda: step(cached), args.repeats)
    print(f"backbone {args.backbone}, {args.classes} classes, batch {args.batch}, M={args.n_ctx}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"step without feature cache (image encoder every step): {uncached * 1000:9.1f} ms")
    print(f"step with feature cache:                               {with_cache * 1000:9.1f} ms")
    print(f"speed-up: {uncached / with_cache:.2f}x")


if __name__ == "__main__":
    main()
