"""Helpers of the sweep and report tests: spec files, the `vlprompt` command in real processes, registry reads."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

CLI = [sys.executable, "-m", "vlprompt.cli.main"]
SMALL = ["backbone.pretrained=null", "train.epochs=2", "train.batch_size=4"]


def write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def folder_spec(tmp_path: Path, images: Path, name="spec.yaml", **extra) -> Path:
    """A grid over the image folder: coop, seeds 1-2, shots 1-2 (four runs) unless ``extra`` says otherwise."""
    spec = {"out": str(tmp_path / "out"), "preset": "world-demo", "methods": ["coop"],
            "datasets": [f"folder:{images}"], "shots": [1, 2], "seeds": [1, 2],
            "overrides": SMALL + ["data.subsample=all", "data.eval_subsets=[all]", f"cache_dir={tmp_path / 'cache'}"]}
    spec.update(extra)
    return write_spec(tmp_path / name, **spec)


def env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def vlprompt(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env())


def start(*args, log: Path | None = None, **environment) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(CLI + [str(a) for a in args], stdout=out, stderr=subprocess.STDOUT,
                            env={**env(), **environment})


def registry_rows(out: Path) -> list[dict]:
    """The registry read with plain sqlite3, independently of the library's RunRegistry class."""
    with sqlite3.connect(out / "registry.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY rowid")]


def result_stamps(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")}


def epochs_trained(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def claim_all(path: str, ids: list[str], queue) -> None:
    """Claim and finish specs until none is left; put the claimed ids on ``queue``. Kept here, away from
    torch-importing modules, so that spawned processes start fast."""
    from vlprompt.sweep.registry import RunRegistry

    registry = RunRegistry(path)
    mine = []
    while (row := registry.claim(ids)) is not None:
        mine.append(row.spec_id)
        registry.finish(row.spec_id, {"by": os.getpid()})
    queue.put(mine)
