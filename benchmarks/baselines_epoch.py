"""Seconds per training epoch of the trainable learners added beside CoOp on cached features against their
official way (the image encoder in the loop, every step), in one run.

For each of clip_adapter, zslp+clap, tip_adapter_f, plot (region tokens cached), tcp and clip_lora with its text
tower updated alone (encoder=text, the CLIP-LoRA variant whose image features stay frozen): one epoch over K
classes x S shots at the method's batch size, (a) as the official trainers run it, encoding each batch's images with the frozen
image tower before the method's forward and backward, and (b) as vlprompt trains, on features cached
once. The cached way's one-time cost (encoding every training image once) is printed too. Before
timing, both ways' logits on one batch are checked to agree. Random weights: the numbers are costs,
not accuracies. The official way is timed on a few batches and scaled to the epoch.

    python benchmarks/baselines_epoch.py [--backbone ViT-B-16] [--classes 100] [--shots 16] [--batches 1]
        [--methods plot,tcp]
"""

from __future__ import annotations

import argparse
import time

import torch
from threads import add_threads_argument, set_threads

from vlprompt.backbones import load_backbone
from vlprompt.data.feature_cache import feature_shape
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.registry import build_regularizer

#: method: (batch size, train settings, learner options) as in the presets
METHODS = {
    "clip_adapter": (32, {"lr": 0.002}, {}),
    "zslp+clap": (256, {"lr": 0.1, "weight_decay": 0.0}, {}),
    "tip_adapter_f": (256, {"lr": 0.001, "optimizer": "adamw", "adam_eps": 1e-4, "weight_decay": 0.01}, {}),
    "plot": (128, {"lr": 0.002}, {}),
    "tcp": (32, {"lr": 0.002, "optimizer": "adam", "adam_eps": 1e-3, "weight_decay": 5e-4}, {}),
    # the official loop encodes each batch's images (without gradient) even when only the text tower trains
    "clip_lora": (32, {"lr": 2e-4, "optimizer": "adamw", "weight_decay": 0.01}, {"encoder": "text"}),
}


def build(method: str, backbone, classnames, labels):
    """The method's learner and trainer, and random features of the shape its cache holds (the values do not
    change the cost)."""
    learner_name, *regs = method.split("+")
    batch_size, settings, options = METHODS[method]
    learner = build_learner(learner_name, backbone, classnames, "a photo of a {}.", **options)
    features = torch.randn(len(labels), *feature_shape(backbone, learner.uses_image_tokens))
    if Capability.CACHE_MODEL in learner.offers:
        learner.build_from_training_set(features[None], labels)
    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=batch_size, warmup_epochs=0, **settings),
                      [build_regularizer({"name": r}) for r in regs], TrainContext(learner=learner))
    trainer.start(FeatureBatches(features[None], labels, batch_size, seed=0))
    return learner, trainer, batch_size, features


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--batches", type=int, default=1, help="batches timed for the official way")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"some of {', '.join(METHODS)}")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, None, seed=0)  # random weights: costs only
    size = backbone.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    n = args.classes * args.shots
    classnames = [f"class {i}" for i in range(args.classes)]
    labels = torch.arange(args.classes).repeat_interleave(args.shots)
    one_image = torch.randn(1, 3, size, size)

    per_image = timed(lambda: backbone.encode_image(torch.randn(32, 3, size, size)), 1) / 32
    print(f"{args.backbone} (random weights), {args.classes} classes x {args.shots} shots = {n} images, "
          f"{torch.get_num_threads()} threads; encoding one image: {per_image * 1e3:.1f} ms, so caching the "
          f"training set once costs {per_image * n:.1f} s")
    print(f"{'method':<16}{'official s/epoch':>18}{'cached s/epoch':>16}{'speed-up':>10}")
    for method in args.methods.split(","):
        if method not in METHODS:
            parser.error(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
        learner, trainer, batch_size, features = build(method, backbone, classnames, labels)
        steps, batch = max(n // batch_size, 1), min(batch_size, n)
        images = torch.randn(batch, 3, size, size)
        batch_labels = labels[:batch]

        def official_step():
            with torch.no_grad():
                encoded = learner.encode_images(images)  # the frozen tower, pooled or with region tokens
            trainer._step({"features": encoded, "labels": batch_labels})

        def cached_epoch():
            for batch in FeatureBatches(features[None], labels, batch_size, seed=0).epoch(0):
                trainer._step(batch)

        with torch.no_grad():  # the two ways score a batch alike
            encoded = learner.encode_images(one_image)
            assert torch.allclose(learner(images=one_image).logits, learner(features=encoded).logits, atol=1e-4)
        official = timed(official_step, args.batches) * steps
        cached = timed(cached_epoch, 2)
        print(f"{method:<16}{official:>18.2f}{cached:>16.3f}{official / cached:>9.0f}x")


if __name__ == "__main__":
    main()
