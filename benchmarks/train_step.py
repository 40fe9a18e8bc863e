"""Seconds per CoOp training step: the reference way against each exact speed-up, in one run.

Variants (16 context vectors, class token at the end, batch of 32 images, SGD step):
  reference       image encoder every step + all classes' full 77-token prompts
  cached          cached image features + full 77-token prompts
  +truncation     cached features + prompts cut after the last end-of-text token
  +shared prefix  cached features + the shared start/context prefix encoded once (vlprompt's path)
Before timing, features and context gradients of the fast paths are checked against the plain
77-token path. Peak memory is the growth of the process's maximum resident set size during the
variant (ru_maxrss), so run variants in increasing order of memory (as done here). Achieved
GFLOP/s of the shared-prefix step (FLOPs counted by torch's FlopCounterMode) are compared with a
matmul peak measured in the same run.

    python benchmarks/train_step.py [--backbone ViT-B-16] [--classes 10 100 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from threads import add_threads_argument, set_threads
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from vlprompt.backbones import load_backbone
from vlprompt.learners.coop import CoOp

VARIANTS = ("reference", "cached", "+truncation", "+shared prefix")


def class_names(n: int, seed: int = 0) -> list[str]:
    words = ("red blue green small large round striped wooden metal flying spotted ancient golden quiet northern "
             "bright dark long short heavy sea mountain river bird car house tree flower dog cat").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def text_features(learner: CoOp, variant: str, use_checkpoint: bool) -> torch.Tensor:
    tower = learner.backbone.text
    if variant == "+shared prefix":
        return learner.encode_context(learner.ctx)
    prompts = learner.tokens.assemble(learner.ctx)
    truncate = variant == "+truncation"
    if not use_checkpoint:
        return tower(prompts, learner.tokens.eot, truncate=truncate)
    chunks = [checkpoint(tower, prompts[i : i + 100], learner.tokens.eot[i : i + 100], truncate, use_reentrant=False)
              for i in range(0, len(prompts), 100)]
    return torch.cat(chunks)


def make_step(learner, images, cached, labels, variant, use_checkpoint):
    optimizer = torch.optim.SGD([learner.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    backbone = learner.backbone

    def step():
        if variant == "reference":
            with torch.no_grad():
                image = backbone.encode_image(images)
        else:
            image = cached
        text = F.normalize(text_features(learner, variant, use_checkpoint), dim=-1)
        logits = backbone.logit_scale * F.normalize(image, dim=-1) @ text.t()
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def check_exactness(learner: CoOp, chunk: int = 100) -> tuple[float, float]:
    """Worst feature and relative context-gradient differences of the fast paths from the 77-token path.

    The plain path runs in chunks of classes, each with its own backward, so that 1000 full-length
    prompts fit in memory; the chunks' context gradients add up to the whole one.
    """
    tower = learner.backbone.text
    eot = learner.tokens.eot
    weights = torch.randn(len(eot), tower.output_dim)
    prompts = learner.tokens.assemble(learner.ctx)
    plain, g_plain = [], torch.zeros_like(learner.ctx)
    for i in range(0, len(eot), chunk):
        out = tower(prompts[i : i + chunk], eot[i : i + chunk], truncate=False)
        # keep the shared assembly's graph for the next chunk; this chunk's activations go with `out`
        g_plain += torch.autograd.grad((out * weights[i : i + chunk]).sum(), learner.ctx, retain_graph=True)[0]
        plain.append(out.detach())
    plain = torch.cat(plain)
    worst_feature = worst_grad = 0.0
    for variant in ("+truncation", "+shared prefix"):
        fast = text_features(learner, variant, False)
        (g_fast,) = torch.autograd.grad((fast * weights).sum(), learner.ctx)
        worst_feature = max(worst_feature, float((fast.detach() - plain).abs().max()))
        worst_grad = max(worst_grad, float((g_fast - g_plain).abs().max() / g_plain.abs().max()))
    return worst_feature, worst_grad


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--checkpoint-above", type=int, default=300,
                        help="use activation checkpointing for full-length text above this many classes")
    add_threads_argument(parser)
    args = parser.parse_args()
    print(set_threads(args.threads), flush=True)

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, None)
    images = torch.randn(32, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        cached = backbone.encode_image(images)
    peak = matmul_peak_gflops()
    print(f"{args.backbone} (random weights), {torch.get_num_threads()} threads; matmul peak {peak:.1f} GFLOP/s")
    print(f"{'classes':>7} {'variant':>15} {'s/step':>9} {'peak RSS +MB':>13}")
    for k in args.classes:
        learner = CoOp(backbone, class_names(k), n_ctx=16)
        labels = torch.randint(k, (32,))
        feat_err, grad_err = check_exactness(learner)
        assert feat_err < 1e-4 and grad_err < 1e-4, (feat_err, grad_err)
        print(f"{k:>7} exactness vs 77-token path: features {feat_err:.1e}, context gradient (relative) {grad_err:.1e}")
        results: dict[str, float] = {}
        for variant in reversed(args.variants):  # fastest (least memory) first: ru_maxrss only grows
            use_ckpt = variant in ("reference", "cached") and k > args.checkpoint_above
            step = make_step(learner, images, cached, labels, variant, use_ckpt)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            step()
            seconds = statistics.median(_timed(step) for _ in range(args.repeats))
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            results[variant] = seconds
            note = " (activation checkpointing)" if use_ckpt else ""
            print(f"{k:>7} {variant:>15} {seconds:9.3f} {grown:13.0f}{note}", flush=True)
            if variant == "+shared prefix":
                with FlopCounterMode(display=False) as counter:
                    step()
                gflops = counter.get_total_flops() / seconds / 1e9
                print(f"{k:>7} {'':>15} shared-prefix step: {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% "
                      "of the matmul peak")
        if "reference" in results:
            for variant in args.variants[1:]:
                print(f"{k:>7} {variant:>15} speed-up vs reference: {results['reference'] / results[variant]:.1f}x")


if __name__ == "__main__":
    main()
