"""The sweep loop: register the specs, then claim, run and record them until none is left.

Specs are claimed one at a time as an executor slot frees up, so several ``sweep run`` processes
(on one machine or many sharing the registry's folder) split a sweep between them; a process that
finds the rest held by live processes waits for them, then returns every row. Rows held by a process
that died are claimed again, and finished runs are never repeated unless asked (stale or failed).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from vlprompt.engine.config import RunConfig
from vlprompt.engine.datasets import run_dataset
from vlprompt.engine.run import RESULTS_FILE
from vlprompt.engine.split import sample_split, split_hash, tested_data
from vlprompt.errors import VlpromptError
from vlprompt.sweep.executors import make_executor
from vlprompt.sweep.registry import REGISTRY_FILE, Row, RunRegistry, stale_reason

log = logging.getLogger(__name__)

# written by a run; removed before a requested rerun so that it trains from scratch
RUN_FILES = ("results.json", "checkpoint.pt", "metrics.jsonl")


class SweepFailed(VlpromptError):
    """Some runs of a sweep failed; the others are recorded."""


def registry_of(plans) -> Path:
    """The registry beside the plans' run directories: OUT/registry.sqlite for runs in OUT/runs."""
    folders = {Path(p.config.output_dir).expanduser() for p in plans}
    if len(folders) != 1:
        raise VlpromptError(f"the runs of one sweep must share one output folder, got {sorted(map(str, folders))}")
    return folders.pop().parent / REGISTRY_FILE


def stale_rows(registry: RunRegistry, spec_ids: list[str] | None = None) -> dict[str, str]:
    """spec id -> why its finished row is stale (code version, or the data it would see now)."""
    found = {}
    datasets = {}  # each dataset is read once, however many runs use it

    def dataset(spec: str, root: str | None, split_file: str | None = None):
        if (spec, root, split_file) not in datasets:
            datasets[spec, root, split_file] = run_dataset(spec, root, split_file)
        return datasets[spec, root, split_file]

    for row in registry.rows():
        if row.state == "done" and (spec_ids is None or row.spec_id in spec_ids):
            config = RunConfig.from_dict(row.config)
            try:
                data, train_data, _ = sample_split(config, dataset(config.data.dataset, config.data.root, config.data.split_file))
                reason = stale_reason(row, split_hash(train_data, tested_data(config, data, dataset)))
            except VlpromptError as exc:
                reason = f"its data cannot be read or sampled now ({exc})"
            if reason:
                found[row.spec_id] = reason
    return found


def finished_run(row: Row) -> tuple[dict, float] | None:
    """(results, end time) when the row's run directory holds the results of its config, else None."""
    path = Path(row.run_dir) / RESULTS_FILE
    try:
        results = json.loads(path.read_text())
        ended = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return (results, ended) if isinstance(results, dict) and results.get("run_id") == row.config_hash else None


def record_orphans(registry: RunRegistry) -> list[str]:
    """Rows left running by a dead process whose run finished become done (the process's results)."""
    done = registry.finish_orphans(finished_run)
    for spec_id in done:
        log.info("run %s finished before the process that ran it died; recorded as done", spec_id)
    return done


def run_sweep(plans, executor=None, workers: int = 1, registry: str | Path | None = None,
              rerun_stale: bool = False, retry_failed: bool = False, poll_s: float = 1.0) -> list[Row]:
    """Run every plan that is not finished; return the registry rows in plan order."""
    if not plans:
        return []
    reg = RunRegistry(registry or registry_of(plans))
    try:
        reg.add(plans)
        record_orphans(reg)
        ids = [p.spec_id for p in plans]
        again = []
        if retry_failed:
            again += [r.spec_id for r in reg.rows() if r.state == "failed" and r.spec_id in ids]
        if rerun_stale:
            again += list(stale_rows(reg, ids))
        for spec_id in again:
            run_dir = Path(reg.get(spec_id).run_dir)
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        reg.reset(again)
        _loop(reg, ids, executor, workers, poll_s)
        return [reg.get(i) for i in ids]
    finally:
        reg.close()


def _loop(reg: RunRegistry, ids: list[str], executor, workers: int, poll_s: float) -> None:
    running = {}  # future -> spec id
    wanted = set(ids)
    try:
        while True:
            while executor is None or len(running) < executor.slots:
                row = reg.claim(ids)
                if row is None:
                    break
                executor = executor or make_executor("local", workers)
                log.info("run %s (attempt %d)", row.spec_id, row.attempts)
                running[executor.submit(RunConfig.from_dict(row.config))] = row.spec_id
            if running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    _record(reg, running.pop(future), future)
                states = reg.states()
                log.info("%d of %d runs finished", sum(states[i] in ("done", "failed") for i in ids), len(ids))
            elif any(state in ("pending", "running") for i, state in reg.states().items() if i in wanted):
                time.sleep(poll_s)  # the rest is held by other live processes: wait for them
            else:
                return
    finally:
        if executor is not None:
            executor.shutdown()


def _record(reg: RunRegistry, spec_id: str, future) -> None:
    exc = future.exception()
    if exc is None:
        reg.finish(spec_id, future.result())
        return
    message = f"{type(exc).__name__}: {exc}"
    log.error("run %s failed: %s", spec_id, message)
    log.debug("".join(traceback.format_exception(exc)))
    reg.fail(spec_id, message)


def protocol_executor(plans, workers: int = 1) -> list[dict]:
    """The executor the command line gives protocols: their runs as a sweep in the registry beside them."""
    return completed_results(run_sweep(plans, workers=workers))


def completed_results(rows: list[Row]) -> list[dict]:
    """The results of finished rows; a SweepFailed naming the failures when there are any."""
    failed = [r for r in rows if r.state != "done"]
    if failed:
        first = failed[0]
        raise SweepFailed(f"{len(failed)} of {len(rows)} runs failed (the others are recorded); first: "
                          f"{first.spec_id}: {first.error}; see `vlprompt sweep status "
                          f"{Path(first.run_dir).parent.parent}` and rerun with --retry-failed once fixed")
    return [r.results for r in rows]
