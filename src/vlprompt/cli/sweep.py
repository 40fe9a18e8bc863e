"""``vlprompt sweep run|status|report`` (many runs from a spec file, recorded in a run registry) and
``vlprompt report`` (the static HTML report of a sweep or of a folder of runs)."""

from __future__ import annotations

import time
from pathlib import Path

from vlprompt.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep spec (grid or protocol), show its state, or report it")
    commands = p.add_subparsers(title="sweep commands")

    r = commands.add_parser("run", help="run every spec of a sweep file that is not finished")
    r.add_argument("spec", help="a sweep YAML file (a grid of methods x datasets x shots x seeds, or a protocol)")
    r.add_argument("--out", help="output folder (default: the file's `out`, else runs/sweep)")
    r.add_argument("--executor", default="local", choices=["local", "ray"], help="where runs execute")
    r.add_argument("--workers", type=int, default=1, help="local executor: runs in parallel, sharing the cores")
    r.add_argument("--address", help="ray: cluster address (auto, or HOST:PORT; default: a local Ray instance)")
    r.add_argument("--gpus-per-run", type=float, default=0, help="ray: GPUs per run (e.g. 1)")
    r.add_argument("--cpus-per-run", type=int, default=1, help="ray: CPUs per run (also its torch threads)")
    r.add_argument("--retries", type=int, default=2, help="ray: retries of a failed or killed task")
    r.add_argument("--rerun-stale", action="store_true",
                   help="rerun finished runs whose code version or sampled split changed")
    r.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    r.set_defaults(func=cmd_run)

    s = commands.add_parser("status", help="state of every run in a sweep's registry, with stale runs")
    s.add_argument("where", help="the sweep's output folder (or its registry.sqlite, or the spec file)")
    s.set_defaults(func=cmd_status)

    for parent, name in ((commands, "report"), (sub, "report")):
        rep = parent.add_parser(name, help="write the static HTML report of a sweep (or of a folder of runs)")
        rep.add_argument("where", help="a sweep's output folder, its registry.sqlite, its spec file, or a folder "
                         "of run directories")
        rep.add_argument("--out", help="report folder (default: WHERE/report)")
        rep.set_defaults(func=cmd_report)


def _registry_of(where: str) -> Path:
    path = Path(where)
    if path.suffix in (".yaml", ".yml"):
        from vlprompt.sweep.spec import load_spec

        out, _ = load_spec(path)
        return out
    return path


def cmd_run(args) -> int:
    from vlprompt.sweep.executors import make_executor
    from vlprompt.sweep.runner import run_sweep
    from vlprompt.sweep.spec import load_spec

    out, plans = load_spec(args.spec, args.out)
    if not plans:
        raise ConfigError(f"sweep spec {args.spec} expands to no runs")
    executor = None
    if args.executor == "ray":
        executor = make_executor("ray", address=args.address, gpus_per_run=args.gpus_per_run,
                                 cpus_per_run=args.cpus_per_run, retries=args.retries)
    start = time.perf_counter()
    rows = run_sweep(plans, executor=executor, workers=args.workers, rerun_stale=args.rerun_stale,
                     retry_failed=args.retry_failed)
    counts = {state: sum(r.state == state for r in rows) for state in ("done", "failed")}
    print(f"{len(rows)} runs: {counts['done']} done, {counts['failed']} failed "
          f"({time.perf_counter() - start:.1f} s); registry {out / 'registry.sqlite'}")
    for r in rows:
        if r.state == "failed":
            print(f"failed {r.spec_id}: {r.error}")
    return 1 if counts["failed"] else 0


def cmd_status(args) -> int:
    from vlprompt.sweep.registry import RunRegistry, process_alive
    from vlprompt.sweep.runner import record_orphans, stale_rows

    registry = RunRegistry(_registry_of(args.where), create=False)
    try:
        record_orphans(registry)
        rows = registry.rows()
        stale = stale_rows(registry)
    finally:
        registry.close()
    for r in rows:
        state = "stale" if r.spec_id in stale else r.state
        holder = f"pid {r.pid} on {r.host}"
        if state == "running" and not process_alive(r.host, r.pid, r.pid_start):
            holder += " (that process is gone; the next `sweep run` takes the run over)"
        detail = {"stale": stale.get(r.spec_id), "failed": r.error, "running": holder}.get(state, "")
        print(f"{state:8} {r.spec_id}  attempts {r.attempts}" + (f"  {detail}" if detail else ""))
    counts = {s: sum(r.state == s for r in rows) for s in ("pending", "running", "done", "failed")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f", {len(stale)} stale (of {len(rows)} runs)"
          + ("; rerun them with `vlprompt sweep run SPEC --rerun-stale`" if stale else ""))
    return 0


def cmd_report(args) -> int:
    from vlprompt.report.html import write_report

    where = _registry_of(args.where)
    index = write_report(where, Path(args.out) if args.out else Path(where) / "report")
    print(f"report: {index}")
    return 0
