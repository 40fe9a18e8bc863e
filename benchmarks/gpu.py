"""Steps per second and peak GPU memory of CoOp, CoCoOp and MaPLe training steps on ViT-B/16, at
fp16 and bf16 autocast with fp16/bf16 frozen towers, for 100 and 1000 classes. Needs a CUDA device.

    python benchmarks/gpu.py [--backbone ViT-B-16] [--classes 100 1000] [--batch 32] [--steps 10]

CoOp and CoCoOp run on cached (random) image features, as vlprompt trains them; MaPLe runs its image
tower on random 224 px images. Weights are random: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import torch

from vlprompt.backbones import load_backbone
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.trainer import TrainConfig, Trainer
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.base import TrainContext

LEARNERS = {"coop": {"n_ctx": 16}, "cocoop": {"n_ctx": 4}, "maple": {"n_ctx": 2, "prompt_depth": 9}}
BATCH = {"coop": 32, "cocoop": 1, "maple": 4}  # the papers' batch sizes


def measure(backbone, name: str, classes: int, precision: str, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    learner = build_learner(name, backbone, [f"class number {i}" for i in range(classes)], **LEARNERS[name])
    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=BATCH[name], precision=precision, device="cuda"),
                      [], TrainContext(learner=learner))
    n = BATCH[name]
    labels = torch.randint(classes, (n,))
    if learner.uses_image_tower:
        batch = {"images": torch.randn(n, 3, backbone.image_size, backbone.image_size), "labels": labels}
    else:
        batch = next(iter(FeatureBatches(torch.randn(1, n, backbone.embed_dim), labels, n, 0).epoch(0)))
    trainer._step(dict(batch))  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer._step(dict(batch))
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - start), torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device; none is available here")
    print(f"device: {torch.cuda.get_device_name()}; {args.backbone}; batch sizes {BATCH}")
    print(f"{'learner':>8} {'classes':>8} {'precision':>10} {'steps/s':>9} {'peak GiB':>9}")
    for precision in ("fp16", "bf16"):
        backbone = load_backbone(args.backbone, None, device="cuda", precision=precision)
        for name in LEARNERS:
            for classes in args.classes:
                rate, peak = measure(backbone, name, classes, precision, args.steps)
                print(f"{name:>8} {classes:>8} {precision:>10} {rate:>9.2f} {peak:>9.2f}")


if __name__ == "__main__":
    main()
