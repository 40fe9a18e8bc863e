"""``vlprompt analyze``: the Low-Norm Effect corruption sweep and prompt-norm curves of a trained prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlprompt.errors import ConfigError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,0.01") from None


def register(subparsers) -> None:
    """Add ``analyze corruption``, ``analyze run`` and ``analyze norms`` to the ``vlprompt`` command."""
    analyze = subparsers.add_parser("analyze", help="analyses of a trained prompt")
    sub = analyze.add_subparsers(title="analyses", dest="analysis", metavar="{corruption,norms}", required=True)

    p = sub.add_parser("corruption", help="REPLACE / RESCALE each prompt position and measure the accuracy change")
    p.add_argument("--prompt", required=True, help="a prompt directory written by train")
    p.add_argument("--dataset", required=True, help="world:TASK, folder:PATH, csv:PATH or a standard name")
    p.add_argument("--root", help="folder holding the standard datasets")
    p.add_argument("--subset", default="all", choices=("all", "base", "new"),
                   help="classes to test on: all, or the base or new half (a base-to-new prompt: base)")
    p.add_argument("--replace", type=_floats, default=[],
                   help="extra REPLACE standard deviations σ, comma-separated (σ=0 is always included)")
    p.add_argument("--rescale", type=_floats, default=[],
                   help="extra RESCALE factors α, comma-separated (α=0.001 is always included)")
    p.add_argument("--seed", type=int, default=0, help="seed of the REPLACE noise")
    p.add_argument("--out", help="output folder for corruption.csv, .md, .json and the heatmap (default: "
                                 "corruption/ in the prompt's run directory, where `vlprompt report` shows it)")
    p.set_defaults(func=cmd_corruption)

    p = sub.add_parser("run", help="the analysis stage again on finished runs: neural-collapse metrics, training "
                                   "curves and prompt-norm curves, into their directories (the report reads them)")
    p.add_argument("run_dirs", nargs="+", help="run directories (with results.json)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("norms", help="plot per-position prompt norms over epochs (runs with nemesis)")
    p.add_argument("--metrics", required=True, help="a run's metrics.jsonl")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.set_defaults(func=cmd_norms)


def cmd_corruption(args) -> int:
    import torch

    from vlprompt.analysis.corruption import corruption_sweep
    from vlprompt.analysis.outputs import CORRUPTION_DIR
    from vlprompt.data.feature_cache import encode_records
    from vlprompt.data.sampling import subsample_classes
    from vlprompt.engine.datasets import resolve_dataset
    from vlprompt.learners.artifact import from_pretrained

    data = subsample_classes(resolve_dataset(args.dataset, args.root), args.subset)
    learner = from_pretrained(args.prompt, classnames=data.classnames)
    if not data.test:
        raise ConfigError(f"dataset {args.dataset!r} has no test images to evaluate on")
    feats = encode_records(learner.backbone, data, data.test, views=1, seed=0, desc="test features",
                           tokens=learner.uses_image_tokens)[0]
    labels = torch.tensor([r.label for r in data.test])
    table = corruption_sweep(learner, feats, labels, replace=args.replace, rescale=args.rescale, seed=args.seed)
    paths = table.write(args.out or Path(args.prompt).parent / CORRUPTION_DIR)
    counts = table.norm_direction_counts()
    print(f"original accuracy {table.baseline_accuracy:.2f}%; Low-Norm Effect frequency "
          f"{table.low_norm_frequency} of {len(table.rows)} (position, corruption) settings; accuracy rose in "
          f"{counts['lowered'][0]} of {counts['lowered'][1]} norm-lowering and {counts['raised'][0]} of "
          f"{counts['raised'][1]} norm-raising settings")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_run(args) -> int:
    from vlprompt.analysis.run_analysis import analyze_run

    for run_dir in args.run_dirs:
        for what, path in analyze_run(run_dir, again=True).items():
            print(f"{what}: {path}")
    return 0


def cmd_norms(args) -> int:
    from vlprompt.analysis.prompt_norms import plot_norm_history

    print(plot_norm_history(args.metrics, args.out))
    return 0
