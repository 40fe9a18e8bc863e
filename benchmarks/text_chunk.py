"""Peak memory of one class-specific CoOp training step at many classes: all class prompts at once
against class-chunked, checkpointed encoding (train.text_chunk), each in a fresh process.

Class-specific contexts cannot share a prefix, so every class is a full text sequence and the
backward pass keeps the activations of all of them. The peak resident set size (ru_maxrss) of the
whole process is measured, with the seconds per step; the two variants' gradients are compared.

    python benchmarks/text_chunk.py [--backbone ViT-B-16] [--classes 1000] [--chunk 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def one_step(backbone_name: str, classes: int, chunk: int) -> dict:
    from vlprompt.backbones import load_backbone
    from vlprompt.learners.coop import CoOp

    torch.manual_seed(0)
    backbone = load_backbone(backbone_name, None)
    learner = CoOp(backbone, [f"class number {i}" for i in range(classes)], n_ctx=16, csc=True)
    learner.text_chunk = chunk or None
    features = torch.nn.functional.normalize(torch.randn(32, backbone.embed_dim), dim=-1)
    labels = torch.randint(classes, (32,))
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(learner(features=features).logits, labels)
    loss.backward()
    seconds = time.perf_counter() - start
    grad = learner.ctx.grad
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "seconds": seconds,
            "grad_norm": float(grad.norm()), "grad_sample": grad[::max(1, classes // 7), 0, :4].flatten().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(one_step(args.backbone, args.classes, args.child)))
        return
    print(f"torch threads: {args.threads}; {args.backbone}, class-specific CoOp (M = 16), {args.classes} classes")
    found = {}
    for chunk in (0, args.chunk):
        out = subprocess.run([sys.executable, __file__, "--backbone", args.backbone, "--classes", str(args.classes),
                              "--threads", str(args.threads), "--child", str(chunk)],
                             capture_output=True, text=True, check=True)
        found[chunk] = json.loads(out.stdout.strip().splitlines()[-1])
        label = "all classes at once" if chunk == 0 else f"chunks of {chunk}"
        print(f"{label:>20}: peak RSS {found[chunk]['peak_rss_gb']:.2f} GiB, {found[chunk]['seconds']:.1f} s/step")
    a, b = found[0], found[args.chunk]
    assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * a["grad_norm"], "gradients differ"
    print(f"memory ratio {a['peak_rss_gb'] / b['peak_rss_gb']:.1f}x; gradient norms agree ({a['grad_norm']:.6g})")


if __name__ == "__main__":
    main()
