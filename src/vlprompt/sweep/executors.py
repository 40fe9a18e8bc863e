"""Where a sweep's runs execute: this process, a local process pool, or Ray tasks on a cluster.

An executor turns a run config into a ``concurrent.futures.Future`` of its results and says how
many runs it can hold at once (``slots``); the sweep loop claims that many specs from the registry
and records each outcome. Every run sets its torch/OpenMP thread count first, so parallel runs
share the cores instead of each taking all of them. A pool worker exits when its driver dies: nobody
would record its run, and it would otherwise wait forever for the next one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from vlprompt.engine.config import RunConfig
from vlprompt.errors import ConfigError
from vlprompt.sweep.registry import host_name, process_alive, process_start

log = logging.getLogger(__name__)


def run_spec(config: dict, threads: int | None = None) -> dict:
    """One run in the current process (a pool worker or a Ray task), with ``threads`` torch threads, and
    the analysis stage on it once finished (skipped when its analyses are current), so that the report
    only reads files; returns its ``results.json`` (None when the run was interrupted)."""
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        log.info("process %d runs with %d torch threads", os.getpid(), threads)
    from vlprompt.analysis.run_analysis import analyze_run
    from vlprompt.engine.run import run_experiment

    result = run_experiment(RunConfig.from_dict(config))
    if result.status == "finished":
        analyze_run(result.run_dir)
    return result.results


def threads_per_worker(workers: int) -> int:
    """The cores (or the OMP_NUM_THREADS the user set) divided among ``workers`` runs, at least 1."""
    total = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    return max(1, total // workers)


def exit_with_driver(driver_pid: int, driver_start: int | None, poll_s: float = 0.5) -> None:
    """Pool worker initializer: a thread that ends this process once the driver is gone.

    A worker blocked on the pool's queue never learns of a SIGKILLed driver (its siblings hold the
    queue open), so it polls the driver's pid and start time; an interrupted run resumes from its
    checkpoint, and the kernel drops its run lock.
    """
    def watch() -> None:
        while process_alive(host_name(), driver_pid, driver_start):
            time.sleep(poll_s)
        log.warning("process %d: its sweep driver (pid %d) is gone; exiting", os.getpid(), driver_pid)
        os._exit(1)

    threading.Thread(target=watch, name="vlprompt-driver-watch", daemon=True).start()


class InProcess:
    """Runs one spec at a time in this process (``--workers 1``): no start-up cost, plain tracebacks."""

    slots = 1

    def submit(self, config: RunConfig) -> Future:
        future: Future = Future()
        try:
            future.set_result(run_spec(config.to_dict()))
        except Exception as exc:  # recorded as the run's failure by the sweep loop
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


class LocalPool:
    """A process pool of ``workers`` runs, each with its share of the cores."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ConfigError(f"--workers {workers} must be at least 1")
        self.slots = workers
        self.threads = threads_per_worker(workers)
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.slots, initializer=exit_with_driver,
                                   initargs=(os.getpid(), process_start(os.getpid())))

    def submit(self, config: RunConfig) -> Future:
        try:
            return self.pool.submit(run_spec, config.to_dict(), self.threads)
        except BrokenProcessPool:  # a worker died (its runs are recorded failed); start a fresh pool
            self.pool = self._new_pool()
            return self.pool.submit(run_spec, config.to_dict(), self.threads)

    def shutdown(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayExecutor:
    """Each run a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; Ray retries failed tasks.

    ``address`` None starts a local Ray instance; "auto" joins the cluster this node belongs to.
    """

    def __init__(self, address: str | None = None, gpus_per_run: float = 0, cpus_per_run: int = 1,
                 retries: int = 2):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray, an optional extra: pip install 'vlprompt[ray]'") from None
        if cpus_per_run < 1 or gpus_per_run < 0 or retries < 0:
            raise ConfigError("--cpus-per-run must be at least 1, --gpus-per-run and --retries at least 0")
        if not ray.is_initialized():
            ray.init(address=address)
        self.ray = ray
        self.task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries,
                               retry_exceptions=retries > 0)(run_spec)
        self.threads = cpus_per_run
        resources = ray.cluster_resources()
        fits = [resources.get("CPU", 1) // cpus_per_run]
        if gpus_per_run:
            fits.append(resources.get("GPU", 0) // gpus_per_run)
        self.slots = max(1, int(min(fits)))

    def submit(self, config: RunConfig) -> Future:
        return self.task.remote(config.to_dict(), self.threads).future()

    def shutdown(self) -> None:
        pass


def make_executor(kind: str = "local", workers: int = 1, **ray_options):
    if kind == "ray":
        return RayExecutor(**ray_options)
    if kind != "local":
        raise ConfigError(f"--executor {kind!r} is not known; choose local or ray")
    return InProcess() if workers == 1 else LocalPool(workers)
