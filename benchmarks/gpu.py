"""Steps per second and peak GPU memory of CoOp, CoCoOp and MaPLe training steps on ViT-B/16, vlprompt's
way against the naive way in the same process, at 100 and 1000 classes.

  naive     the reference's computation: the image encoder on every step and every class prompt at all
            77 token positions (the shared prefix of CoOp and CoCoOp off)
  vlprompt  cached image features for CoOp and CoCoOp (their image tower is frozen), prompts cut after
            the last end-of-text token, the shared prefix encoded once; MaPLe prompts the image tower,
            so it runs on every step either way

Both ways run the learner's own forward and vlprompt's training step (autocast, scaler, SGD) at the same
precision, with the papers' batch sizes. Weights are random: the cost does not depend on them.

    python benchmarks/gpu.py [--backbone ViT-B-16] [--classes 100 1000] [--precision fp16 bf16] [--steps 10]

Needs a CUDA device unless --device cpu is given (then peak memory is not reported).
"""

from __future__ import annotations

import argparse
import time

import torch
from train_step import class_names

from vlprompt.backbones import load_backbone
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.base import TrainContext

LEARNERS = {"coop": {"n_ctx": 16}, "cocoop": {"n_ctx": 4}, "maple": {"n_ctx": 2, "prompt_depth": 9}}
BATCH = {"coop": 32, "cocoop": 1, "maple": 4}  # the papers' batch sizes
WAYS = ("naive", "vlprompt")


def learner_options(name: str, backbone) -> dict:
    """The papers' options, MaPLe's prompt depth capped at the backbone's depth (a small test model)."""
    options = dict(LEARNERS[name])
    if "prompt_depth" in options:
        options["prompt_depth"] = min(options["prompt_depth"], len(backbone.text.transformer.resblocks))
    return options


def measure(backbone, name: str, classes: int, precision: str, steps: int, way: str) -> dict:
    """Steps per second of ``steps`` timed steps after one warm-up, and the peak GPU memory (GiB) of the
    timed steps (None off CUDA)."""
    torch.manual_seed(0)
    learner = build_learner(name, backbone, class_names(classes), **learner_options(name, backbone))
    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=BATCH[name], precision=precision), [],
                      TrainContext(learner=learner))
    n = BATCH[name]
    labels = torch.randint(classes, (n,))
    naive = way == "naive"
    if learner.uses_image_tower or naive:
        batch = {"images": torch.randn(n, 3, backbone.image_size, backbone.image_size), "labels": labels}
    else:
        batch = next(iter(FeatureBatches(torch.randn(1, n, backbone.embed_dim), labels, n, 0).epoch(0)))
    cuda = backbone.device.type == "cuda"
    if hasattr(learner, "shared_prefix"):  # CoOp's and CoCoOp's switch; MaPLe shares no prefix
        learner.shared_prefix = not naive
    backbone.text.truncate = not naive
    try:
        trainer._step(dict(batch))  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            trainer._step(dict(batch))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        backbone.text.truncate = True
    return {"steps_per_s": steps / seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def compare(backbone, name: str, classes: int, precision: str, steps: int) -> dict:
    """Both ways, naive first, and vlprompt's speed-up over the naive way."""
    rows = {way: measure(backbone, name, classes, precision, steps, way) for way in WAYS}
    return {**rows, "speedup": rows["vlprompt"]["steps_per_s"] / rows["naive"]["steps_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--precision", nargs="+", default=["fp16", "bf16"], choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device; none is available here (--device cpu runs it on the CPU)")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {where}; {args.backbone} (random weights); batch sizes {BATCH}")
    print(f"{'learner':>8} {'classes':>8} {'precision':>10} {'naive steps/s':>14} {'vlprompt steps/s':>17} "
          f"{'speed-up':>9} {'naive GiB':>10} {'vlprompt GiB':>13}")
    for precision in args.precision:
        backbone = load_backbone(args.backbone, None, device=args.device, precision=precision)
        for name in LEARNERS:
            for classes in args.classes:
                r = compare(backbone, name, classes, precision, args.steps)
                gib = [f"{r[w]['peak_gib']:.2f}" if r[w]["peak_gib"] is not None else "-" for w in WAYS]
                print(f"{name:>8} {classes:>8} {precision:>10} {r['naive']['steps_per_s']:>14.2f} "
                      f"{r['vlprompt']['steps_per_s']:>17.2f} {r['speedup']:>8.1f}x {gib[0]:>10} {gib[1]:>13}",
                      flush=True)


if __name__ == "__main__":
    main()
