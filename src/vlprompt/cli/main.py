"""The ``vlprompt`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vlprompt.cli import analyze, data, official, reproduce, sweep, world
from vlprompt.errors import ConfigError, DataError, VlpromptError

log = logging.getLogger("vlprompt")

OVERRIDE_HELP = "configuration overrides as key=value, e.g. train.epochs=5 data.shots=4"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # argparse cannot give a trailing positional list after options; key=value overrides may stand anywhere
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not hasattr(args, "func"):
        parser.error("choose a command; `vlprompt --help` lists them")
    try:
        status = args.func(args) or 0
        sys.stdout.flush()  # inside the try: a reader that went away is found here, not at interpreter exit
        return status
    except BrokenPipeError:
        if not _stdout_is_gone():
            raise  # a pipe to another process broke: a real error
        return _quiet_exit_on_closed_stdout()
    except VlpromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


def _stdout_is_gone() -> bool:
    """True when the reader of standard output has closed it (``vlprompt list ... | head -1``): the
    write end of a pipe without a reader polls as an error."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are always reported
        if any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0)):
            return True
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real file behind stdout
        pass
    try:  # elsewhere: output still buffered fails to flush the same way
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        pass
    return False


def _quiet_exit_on_closed_stdout() -> int:
    """Exit as Unix tools do when their reader stops reading: no traceback, status 128 + SIGPIPE.

    Standard output is pointed at the null device so that the interpreter's final flush of what is
    still buffered does not raise the same error again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # 13 is SIGPIPE (the signal module lacks it on Windows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlprompt", description="Soft-prompt tuning for CLIP-like models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser("train", help="train (or resume) one run and evaluate it")
    p.add_argument("--preset", help="a preset name (`vlprompt list presets`) or a YAML file")
    p.add_argument("--lock-timeout", type=float, help="seconds to wait when another process holds the same run "
                   "(default: wait until it finishes)")
    p.add_argument("--nproc", type=_positive_int, default=1,
                   help="train this one run in N processes (one per GPU), as torchrun --nproc-per-node N does")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a saved prompt on a dataset's test split")
    p.add_argument("--prompt", required=True, help="a prompt directory written by train")
    p.add_argument("--dataset", required=True, help="world:TASK, folder:PATH, csv:PATH or a standard name")
    p.add_argument("--root", help="folder holding the standard datasets")
    p.add_argument("--subset", default="all", choices=["all", "base", "new"], help="classes to evaluate on")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify images with a saved prompt")
    p.add_argument("images", nargs="+", help="image files, or folders: every image under a folder, recursively")
    p.add_argument("--prompt", required=True, help="a prompt directory written by train")
    p.add_argument("--classes", help="comma-separated class names (default: the classes it was trained on)")
    p.add_argument("--top-k", type=_positive_int, default=3, help="how many classes to show per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("list", help="list methods (what composes), backbones, learners, regularizers, datasets, "
                                    "protocols or presets")
    p.add_argument("what", choices=["methods", "backbones", "learners", "regularizers", "datasets", "protocols",
                                    "presets"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("describe", help="the options, defaults and capabilities of a method (e.g. coop+kgcoop), or "
                                        "the options of a run section (train, data, backbone, protocol)")
    p.add_argument("method", help="learner[+regularizer...], e.g. coop, cocoop+nemesis; or train, data, backbone, "
                                  "protocol")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("export", help="write a saved prompt's text classifier for plain open_clip code")
    p.add_argument("--prompt", required=True, help="a prompt directory written by train")
    p.add_argument("--classes", help="comma-separated class names (default: the classes it was trained on)")
    p.add_argument("--out", required=True, help="the folder to write classifier.safetensors and .json into (and "
                   "backbone/, in open_clip's local-dir format, for the embedded model)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="run a protocol: many runs, then a table (mean ± std over seeds)")
    p.add_argument("protocol", help="few_shot, base_to_new, domain_generalization, cross_dataset or imbalanced "
                                    "(`vlprompt list protocols`)")
    p.add_argument("--methods", help="comma-separated methods: learner[+regularizer...], e.g. "
                   "zeroshot,coop,coop+prograd (default: the preset's `methods` list)")
    p.add_argument("--datasets", help="comma-separated datasets (first = source for transfer protocols; "
                   "default: the preset's data.dataset)")
    p.add_argument("--targets", help="comma-separated target datasets (transfer protocols)")
    p.add_argument("--seeds", type=_numbers(int), default="1,2,3", help="comma-separated seeds")
    p.add_argument("--shots", type=_numbers(int), help="comma-separated shot counts (few_shot; default 1,2,4,8,16)")
    p.add_argument("--ratios", type=_numbers(float), help="comma-separated imbalance ratios (imbalanced; default "
                   "1,0.25,0.0625)")
    p.add_argument("--preset", default="world-demo", help="preset of the runs")
    p.add_argument("--out", help="output folder (default runs/PROTOCOL)")
    p.add_argument("--workers", type=_positive_int, default=1, help="runs in parallel (local process pool)")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the main job: base-to-new comparison on the embedded world")
    p.add_argument("--preset", default="world-methods",
                   help="preset of the runs (default: world-methods, each method at its paper's schedule)")
    p.add_argument("--methods", default="zeroshot,coop,coop+kgcoop",
                   help="comma-separated methods (default: zero-shot CLIP, CoOp, and KgCoOp, which keeps more "
                   "of the zero-shot accuracy on new classes)")
    p.add_argument("--datasets", default="world:objects_noisy_base",
                   help="comma-separated datasets (default: the world's base-to-new task, whose base classes "
                   "come from a noisy camera and whose new classes, of other shapes, are clean)")
    p.add_argument("--seeds", type=_numbers(int), default="1", help="comma-separated seeds")
    p.add_argument("--workers", type=_positive_int, default=2, help="runs in parallel (local process pool)")
    p.add_argument("--out", default="runs/demo", help="output folder (tables and run directories)")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_demo)

    analyze.register(sub)
    world.register(sub)
    data.register(sub)
    official.register(sub)
    sweep.register(sub)
    reproduce.register(sub)
    return parser


def cmd_train(args) -> int:
    from vlprompt.analysis.run_analysis import analyze_run
    from vlprompt.engine.config import resolve_config
    from vlprompt.engine.distributed import leave as leave_process_group
    from vlprompt.engine.run import run_experiment

    config = resolve_config(args.preset, args.overrides)  # a bad config is refused before processes start
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _torchrun(args.nproc)
    try:
        run = run_experiment(config, lock_timeout=args.lock_timeout)
    finally:
        leave_process_group()
    if run.status == "share":  # a process of a multi-process run other than the first: process 0 reports
        return 0
    if run.status == "interrupted":
        print(f"interrupted after epoch {run.epochs_done}; rerun to resume: {run.run_dir}")
        return 1
    for what, path in analyze_run(run.run_dir).items():
        print(f"{what}: {path}")
    metrics = run.metrics
    for subset, m in metrics.items():
        if isinstance(m, dict):
            print(f"{subset:>5}: accuracy {m['accuracy']:.2f}%  macro-F1 {m['macro_f1']:.2f}%  ({m['num_samples']} images)")
            if "split_aware" in m:
                told = m["split_aware"]
                print(f"{subset:>5}, told {subset} at test time: accuracy {told['accuracy']:.2f}%  "
                      f"macro-F1 {told['macro_f1']:.2f}%")
    if "harmonic_mean" in metrics:
        print(f"harmonic mean: {metrics['harmonic_mean']:.2f}")
    if "split_aware_harmonic_mean" in metrics:
        print(f"harmonic mean, told base/new at test time: {metrics['split_aware_harmonic_mean']:.2f}")
    print(f"run directory: {run.run_dir}")
    return 0


def _torchrun(nproc: int) -> int:
    """Rerun this very command as ``torchrun --standalone --nproc-per-node N -m vlprompt ...``."""
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        argv.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "vlprompt", *argv]
    log.info("starting %d processes: %s", nproc, " ".join(command))
    return subprocess.call(command)


def cmd_eval(args) -> int:
    from vlprompt.api import evaluate

    m = evaluate(args.prompt, args.dataset, root=args.root, subset=args.subset)
    print(f"accuracy {m['accuracy']:.2f}%  macro-F1 {m['macro_f1']:.2f}%  ({m['num_samples']} images)")
    return 0


def cmd_predict(args) -> int:
    import torch

    from vlprompt.api import from_pretrained  # with every built-in artifact codec registered
    from vlprompt.data.records import ImageRecord, load_image_file
    from vlprompt.data.transforms import eval_transform

    learner = from_pretrained(args.prompt, classnames=None if args.classes is None else _class_names(args.classes))
    paths = _image_paths(args.images)
    transform = eval_transform(learner.backbone)
    k = min(args.top_k, len(learner.classnames))
    with torch.no_grad(), learner.fixed_classifier():  # the class text features once, for every batch
        for start in range(0, len(paths), PREDICT_BATCH):  # a folder of many images never sits in memory at once
            batch = paths[start:start + PREDICT_BATCH]
            images = torch.stack([transform(load_image_file(ImageRecord(str(p), -1, "?"))) for p in batch])
            _print_ranked(batch, learner(images=images).logits.softmax(-1), learner.classnames, k)
    return 0


def _print_ranked(paths: list[Path], probs, classnames: list[str], k: int) -> None:
    for path, row in zip(paths, probs):
        top = row.topk(k)
        ranked = ", ".join(f"{classnames[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}")


PREDICT_BATCH = 64


def _image_paths(arguments: list[str]) -> list[Path]:
    """``predict``'s arguments as image files: a file stands for itself, a folder for every image file
    under it (recursively, sorted, by the suffixes image folders use); anything else is refused."""
    from vlprompt.data.folder import IMAGE_SUFFIXES, image_files

    paths, missing = [], []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise DataError(f"{argument} is a folder that holds no image files (looked recursively for "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))}); pass image files or a folder of images")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            missing.append(argument)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"image file {missing[0]} not found{more}; check the path")
    return paths


def cmd_list(args) -> int:
    if args.what == "methods":
        print(methods_matrix())
    elif args.what == "protocols":
        from vlprompt.protocols.protocol import list_protocols

        print("\n".join(list_protocols()))
    elif args.what == "backbones":
        from vlprompt.backbones import list_backbones

        for name, tag in list_backbones():
            print(f"{name}  {tag}")
    elif args.what in ("learners", "regularizers"):
        from vlprompt.cli import catalog  # the methods as data: no torch to import

        for name, entry in (catalog.LEARNERS if args.what == "learners" else catalog.REGULARIZERS).items():
            print(f"{name}  {entry['summary']}".rstrip())
        print("(`vlprompt describe NAME` lists the options of one)")
    elif args.what == "datasets":
        from vlprompt.engine.datasets import list_datasets

        notes = {"folder:PATH": "(one sub-folder per class)", "csv:PATH": "(columns path,label[,split])"}
        for name in list_datasets():
            print(f"{name}  {notes.get(name, '')}".rstrip())
    else:
        from vlprompt.engine.config import list_presets

        for name in list_presets():
            print(name)
    return 0


def methods_matrix() -> str:
    """The learner x regularizer table from the catalog's capabilities, without importing torch."""
    from vlprompt.cli import catalog

    return render_matrix({(lname, rname): sorted(set(reg["requires"]) - set(learner["offers"]))
                          for lname, learner in catalog.LEARNERS.items()
                          for rname, reg in catalog.REGULARIZERS.items()})


def render_matrix(matrix: dict[tuple[str, str], list[str]]) -> str:
    """(learner, regularizer) -> missing capability values, as `vlprompt list methods` prints it:
    "yes" or the missing capabilities, per regularizer."""
    learners = sorted({lname for lname, _ in matrix})
    regularizers = sorted({rname for _, rname in matrix})
    cells = {key: "yes" if not missing else "no: needs " + ", ".join(missing) for key, missing in matrix.items()}
    width = max(len(name) for name in learners) + 2
    lines = []
    for r in regularizers:
        lines.append(f"{r}:")
        lines += [f"  {lname:<{width}}{cells[lname, r]}" for lname in learners]
    lines.append("every learner alone is a method too; `vlprompt describe METHOD` shows options and capabilities")
    return "\n".join(lines)


def cmd_describe(args) -> int:
    from vlprompt.api import describe

    print(describe(args.method))
    return 0


def cmd_export(args) -> int:
    from vlprompt.api import export_classifier, from_pretrained

    learner = from_pretrained(args.prompt, classnames=None if args.classes is None else _class_names(args.classes))
    out = export_classifier(learner, args.out)
    print(f"classifier of {len(learner.classnames)} classes written to {out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _class_names(text: str) -> list[str]:
    """``--classes``: comma-separated, non-empty, each name once."""
    names = [c.strip() for c in text.split(",")]
    if not any(names):
        raise ConfigError(f"--classes {text!r} names no class; give comma-separated names, e.g. --classes cat,dog, "
                          "or leave it out to use the classes the prompt was trained on")
    if not all(names):
        raise ConfigError(f"--classes {text!r} has an empty name; separate the names by single commas")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--classes names {', '.join(map(repr, repeated))} more than once; give each class once")
    return names


def _csv(text: str | None) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


def _numbers(cast):
    """An argparse type: a comma-separated list of ``cast`` values (seeds, shots, ratios), at least one."""
    def parse(text: str) -> list:
        try:
            values = [cast(x) for x in _csv(text)]
        except ValueError:
            values = []
        if not values:
            kind = "whole numbers" if cast is int else "numbers"
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind}, e.g. 1,2,3")
        return values
    return parse


def cmd_run(args) -> int:
    from vlprompt.engine.config import load_preset
    from vlprompt.protocols.common import ProtocolRequest
    from vlprompt.protocols.protocol import refuse_untaken, run_protocol
    from vlprompt.report.protocol_outputs import write_protocol_result
    from vlprompt.sweep.runner import protocol_executor

    # an unknown protocol, or an option it would ignore, is refused before any work
    given = {"shots": args.shots, "ratios": args.ratios, "targets": _csv(args.targets)}
    given = {option: value for option, value in given.items() if value}
    refuse_untaken(args.protocol, list(given), "--{}")
    methods = _csv(args.methods) or list(load_preset(args.preset).get("methods") or [])
    out = Path(args.out or f"runs/{args.protocol}")
    request = ProtocolRequest(methods, args.seeds, args.preset, datasets=_csv(args.datasets),
                              overrides=args.overrides, out_dir=out, workers=args.workers,
                              executor=protocol_executor, **given)
    print(write_protocol_result(run_protocol(args.protocol, request), out))
    print(f"tables written to {out}")
    return 0


def cmd_demo(args) -> int:
    import time

    from vlprompt.protocols.common import ProtocolRequest
    from vlprompt.protocols.protocol import run_protocol
    from vlprompt.report.html import write_report
    from vlprompt.report.protocol_outputs import write_protocol_result
    from vlprompt.sweep.runner import protocol_executor

    start = time.perf_counter()
    request = ProtocolRequest(_csv(args.methods), args.seeds, args.preset, datasets=_csv(args.datasets),
                              overrides=args.overrides, out_dir=Path(args.out), workers=args.workers,
                              executor=protocol_executor)
    table = write_protocol_result(run_protocol("base_to_new", request), args.out)
    print(table)
    print(f"total {time.perf_counter() - start:.1f} s; tables and run directories in {args.out}")
    print(f"report: {write_report(args.out, Path(args.out) / 'report')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
