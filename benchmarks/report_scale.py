"""Seconds to write the report of a large sweep: from scratch, and again after one run changed; the old way beside it.

One real run is trained (and passes through the analysis stage) with `vlprompt sweep run`; its run
directory is copied into RUNS run directories and its registry row into RUNS rows (seeds 1..RUNS), a
grid sweep of one method as a paper's protocol would hold hundreds of. The report of them is written
into a fresh folder, then again after one row's results changed (as when a run is rerun), each in a
fresh process that times `write_report` apart from importing it. The old way is the report as it was
before it only rendered (the parent of the commit that removed its `analyze_run` call), taken from git
and timed the same way on the first OLD_RUNS of these runs (default 50: it costs about a second a run).

    python benchmarks/report_scale.py [--runs 500] [--old-runs 50] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TIMED = """
import json, sys, time
start = time.perf_counter()
from vlprompt.report.html import write_report
imported = time.perf_counter()
write_report(sys.argv[1], sys.argv[2])
print(json.dumps({"import_s": imported - start, "write_s": time.perf_counter() - imported}))
"""


def environment(src: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def one_real_run(work: Path, src: Path) -> Path:
    """A one-run sweep (CoOp + Nemesis on the world, 2 epochs): the registry and run directory to copy."""
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump({"out": str(work / "real"), "preset": "world-methods", "methods": ["coop+nemesis-pun"],
                                    "datasets": ["world:objects"], "shots": [2], "seeds": [1],
                                    "overrides": ["train.epochs=2", f"cache_dir={work / 'cache'}"]}))
    done = subprocess.run([sys.executable, "-m", "vlprompt", "sweep", "run", str(spec)], env=environment(src),
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the real run failed:\n{done.stderr[-3000:]}")
    return work / "real"


def fabricate(real: Path, out: Path, count: int) -> None:
    """``count`` copies of the real run: run directories (files and their times) and registry rows."""
    with sqlite3.connect(real / "registry.sqlite") as db:
        db.row_factory = sqlite3.Row
        (row,) = [dict(r) for r in db.execute("SELECT * FROM runs")]
    source = Path(row["run_dir"])
    (out / "runs").mkdir(parents=True)
    shutil.copy2(real / "registry.sqlite", out / "registry.sqlite")
    rows = []
    for seed in range(1, count + 1):
        spec_id = f"{source.name}_copy{seed}"
        run_dir = out / "runs" / spec_id
        shutil.copytree(source, run_dir)
        results = json.loads(row["results"])
        results["seed"] = seed
        rows.append({**row, "spec_id": spec_id, "run_dir": str(run_dir), "seed": seed,
                     "results": json.dumps(results, sort_keys=True)})
    with sqlite3.connect(out / "registry.sqlite") as db:
        db.execute("DELETE FROM runs")
        db.executemany(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       [tuple(r.values()) for r in rows])


def change_one_run(out: Path) -> None:
    """One run finished again with other numbers, recorded in the registry as a sweep records it."""
    from vlprompt.sweep.registry import Registry

    registry = Registry(out / "registry.sqlite", create=False)
    try:
        row = registry.rows()[len(registry.rows()) // 2]
        results = dict(row.results, metrics={**row.results["metrics"], "all": {
            **row.results["metrics"]["all"], "accuracy": row.results["metrics"]["all"]["accuracy"] + 1.0}})
        registry.finish(row.spec_id, results)
    finally:
        registry.close()


def timed_report(src: Path, where: Path, report: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TIMED, str(where), str(report)], env=environment(src),
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"writing the report with {src} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.splitlines()[-1]), "process_s": time.perf_counter() - start}


def old_source(work: Path) -> Path | None:
    """The package as it was before the report only rendered, from git; None outside a git checkout."""
    found = subprocess.run(["git", "log", "-S", "analyze_run(run_dir)", "--format=%H", "-1", "--",
                            "src/vlprompt/report/html.py"], cwd=REPO, capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip():
        return None
    old = work / "old"
    old.mkdir()
    archive = subprocess.run(["git", "archive", f"{found.stdout.strip()}^", "src"], cwd=REPO, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    print(f"old way: vlprompt at {found.stdout.strip()[:10]}^")
    return old / "src"


def measure(src: Path, where: Path, report: Path, label: str) -> tuple[dict, dict]:
    first = timed_report(src, where, report)
    change_one_run(where)
    again = timed_report(src, where, report)
    for name, t in (("from scratch", first), ("after one run changed", again)):
        print(f"{label:>4}: {name:<22} write_report {t['write_s']:7.2f} s  (whole process {t['process_s']:6.2f} s, "
              f"of which importing {t['import_s']:.2f} s)", flush=True)
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--old-runs", type=int, default=50, help="runs the old way is timed on (0: not timed)")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start (other work slows every timing)")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vlprompt-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = REPO / "src"
    try:
        real = one_real_run(work, src)
        fabricate(real, work / "sweep", args.runs)
        new, new_again = measure(src, work / "sweep", work / "report", "new")
        print(f"{args.runs} runs: {new['write_s'] / args.runs * 1000:.1f} ms a run from scratch; goals: under 30 s "
              f"and under 2 s")
        old = old_source(work) if args.old_runs else None
        if old is not None:
            fabricate(real, work / "small", args.old_runs)
            old_first, old_again = measure(old, work / "small", work / "old-report", "old")
            shutil.rmtree(work / "small")
            fabricate(real, work / "small", args.old_runs)
            small, small_again = measure(src, work / "small", work / "small-report", "new")
            print(f"on {args.old_runs} runs, old / new: from scratch {old_first['write_s'] / small['write_s']:.1f}x, "
                  f"again after one change {old_again['write_s'] / small_again['write_s']:.1f}x; the old way at "
                  f"{args.runs} runs, scaled per run: {old_first['write_s'] / args.old_runs * args.runs:.0f} s from "
                  f"scratch, {old_again['write_s'] / args.old_runs * args.runs:.0f} s again")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
