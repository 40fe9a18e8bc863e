"""``vlprompt reproduce PRESET --root DIR``: a paper's whole protocol for one method, then its report."""

from __future__ import annotations

import time
from pathlib import Path

from vlprompt.errors import DataError


def register(sub) -> None:
    from vlprompt.cli.main import OVERRIDE_HELP, _numbers, _positive_int

    p = sub.add_parser("reproduce", help="run a paper preset's whole protocol (datasets, shots, seeds), then report",
                       description="Run the protocol a paper preset's reproduce: section declares (base-to-new, "
                       "few-shot, domain generalisation or cross-dataset; its datasets, shot counts, seeds and "
                       "per-dataset rules) through the sweep runner, then write the tables and the HTML report. "
                       "Finished runs are never repeated: rerun the same command to resume. See docs/reproduce.md.")
    p.add_argument("preset", help="a paper preset with a reproduce: section (`vlprompt list presets`)")
    p.add_argument("--root", required=True, help="folder holding the datasets (`vlprompt data prepare` lays it out)")
    p.add_argument("--seeds", type=_numbers(int), help="comma-separated seeds (default: the paper's)")
    p.add_argument("--datasets", help="comma-separated datasets, a part of the paper's (default: all of them)")
    p.add_argument("--shots", type=_numbers(int), help="few_shot: comma-separated shot counts (default: the paper's)")
    p.add_argument("--out", help="output folder (default: runs/reproduce/PRESET)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, datasets found and missing, time "
                   "measured by finished runs) and write nothing")
    p.add_argument("--timings-from", action="append", default=[], metavar="DIR",
                   help="--dry-run: also measure time on the finished runs in DIR (repeatable; the --out folder "
                   "is always read)")
    p.add_argument("--retry-failed", action="store_true", help="run the runs that failed before again")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="where runs execute")
    p.add_argument("--workers", type=_positive_int, default=1, help="local: runs in parallel (a process pool)")
    p.add_argument("--address", help="ray: cluster address (auto, or HOST:PORT; default: a local Ray instance)")
    p.add_argument("--gpus-per-run", type=float, default=1, help="ray: GPUs per run (default 1)")
    p.add_argument("--cpus-per-run", type=int, default=4, help="ray: CPUs per run (also its torch threads)")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP + " (applied to every run, after the paper's)")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from vlprompt.cli.main import _csv
    from vlprompt.protocols.reproduce import data_status, dry_run_text, estimate_time, plan_reproduction

    out = Path(args.out or f"runs/reproduce/{Path(args.preset).stem}")
    rep = plan_reproduction(args.preset, args.root, out, seeds=args.seeds, datasets=_csv(args.datasets),
                            shots=args.shots, overrides=args.overrides)
    if not Path(args.root).is_dir():
        raise DataError(f"--root {args.root} is not a folder; lay the datasets out there with `vlprompt data "
                        "prepare NAME --root DIR` (docs/reproduce.md)")
    status = data_status(rep.needed, args.root)
    missing = [d for d in args.timings_from if not Path(d).is_dir()]
    if missing:
        raise DataError(f"--timings-from {missing[0]} is not a folder; give a folder of finished runs (an --out "
                        "folder of reproduce, run or sweep)")
    if args.dry_run:
        folders = [out, *map(Path, args.timings_from)]
        print(dry_run_text(rep, status, estimate_time(rep.plans, folders), args.root, args.workers))
        return 0
    if not status.ok:
        lines = [f"  {name}: {' | '.join(problems)}" for name, problems in status.missing.items()]
        raise DataError(f"{len(status.missing)} dataset(s) of this protocol are not ready under {args.root}:\n"
                        + "\n".join(lines) + "\nprepare them, or leave them out with --datasets")
    return _run(rep, args)


def _run(rep, args) -> int:
    from vlprompt.engine.inputs import check_writable_folder
    from vlprompt.protocols.reproduce import reproduction_result
    from vlprompt.report.html import write_report
    from vlprompt.report.protocol_outputs import write_protocol_result
    from vlprompt.sweep.executors import make_executor
    from vlprompt.sweep.runner import completed_results, run_sweep

    check_writable_folder("--out", str(rep.out_dir))
    executor = None
    if args.executor == "ray":
        executor = make_executor("ray", address=args.address, gpus_per_run=args.gpus_per_run,
                                 cpus_per_run=args.cpus_per_run)
    start = time.perf_counter()
    print(f"reproduce {rep.preset}: {len(rep.plans)} runs of {rep.method} ({rep.spec.protocol}) into {rep.out_dir}")
    results = completed_results(run_sweep(rep.plans, executor=executor, workers=args.workers,
                                                  retry_failed=args.retry_failed))
    print(write_protocol_result(reproduction_result(rep, results), rep.out_dir))
    print(f"total {time.perf_counter() - start:.1f} s; tables in {rep.out_dir}")
    print(f"report: {write_report(rep.out_dir, rep.out_dir / 'report')}")
    return 0
