"""``vlprompt world``: pretrain the embedded tiny CLIP, export a task as an image folder, show samples."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path


def register(subparsers) -> None:
    world = subparsers.add_parser("world", help="the embedded synthetic world")
    sub = world.add_subparsers(title="world commands", dest="world_command", metavar="{pretrain,export,show}",
                               required=True)

    from vlprompt.world.pretrain_config import PretrainConfig

    p = sub.add_parser("pretrain", help="pretrain the tiny CLIP on generated image-caption pairs (resumable)")
    defaults = PretrainConfig()
    for f in fields(PretrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name), help=f"default {getattr(defaults, f.name)}")
    p.add_argument("--out", default="runs/pretrain", help="folder for checkpoint, log and weights")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("export", help="write a world task as an image folder (usable as folder:OUT)")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--test-per-class", type=int, default=10)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("show", help="save a grid of sample images of a task (PNG)")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_show)


def cmd_pretrain(args) -> int:
    from vlprompt.backbones import load_backbone
    from vlprompt.world.pretrain import PretrainConfig, export_weights, pretrain
    from vlprompt.world.zero_shot import zero_shot_report

    config = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    model = pretrain(config, args.out)
    weights = Path(args.out) / "weights.safetensors"
    size = export_weights(model, weights)
    report = zero_shot_report(load_backbone("vlprompt-tiny", str(weights)))
    print(f"weights: {weights} ({size / 2**20:.1f} MiB)")
    print("zero-shot top-1 (%): " + json.dumps({k: round(v, 1) for k, v in report.items()}))
    return 0


def cmd_export(args) -> int:
    from vlprompt.world.tasks import export_image_folder, load_task

    out = export_image_folder(load_task(args.task, test_per_class=args.test_per_class), args.out)
    print(f"wrote {out}")
    return 0


def cmd_show(args) -> int:
    from vlprompt.world.gallery import sample_grid

    sample_grid(args.task, args.out)
    print(f"wrote {args.out}")
    return 0
