"""Peak memory of CoOp training steps on the shared-prefix path, alone in a fresh process.

train_step.py reports the growth of the process's peak RSS per variant, which hides a variant that
needs less than what ran before it; this measures the shared-prefix step on its own.

    python benchmarks/prefix_memory.py [--backbone ViT-B-16] [--classes 1000]
"""

from __future__ import annotations

import argparse
import resource

import torch
import torch.nn.functional as F
from threads import add_threads_argument, set_threads
from train_step import class_names, make_step

from vlprompt.backbones import load_backbone
from vlprompt.learners.coop import CoOp


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=1000)
    add_threads_argument(parser)
    args = parser.parse_args()
    print(set_threads(args.threads), flush=True)
    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, None)
    learner = CoOp(backbone, class_names(args.classes), n_ctx=16)
    cached = F.normalize(torch.randn(32, backbone.embed_dim), dim=-1)  # cached features of a batch
    labels = torch.randint(args.classes, (32,))
    step = make_step(learner, None, cached, labels, "+shared prefix", use_checkpoint=False)
    loaded = peak_gib()
    for _ in range(2):
        step()
    print(f"{args.backbone}, {args.classes} classes: peak RSS {loaded:.2f} GiB after loading, "
          f"{peak_gib():.2f} GiB after two shared-prefix steps")


if __name__ == "__main__":
    main()
