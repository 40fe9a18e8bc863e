"""One process per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``, which names its holder.

Two ``vlprompt train`` processes with the same configuration and output folder would otherwise both
train and both write the same files. The second one waits for the first (and then finds its
results), or gives up after a timeout naming the process that holds the run. The kernel drops the
lock when the holder dies, however it dies, so a killed run never blocks its rerun.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from vlprompt.errors import VlpromptError
from vlprompt.io import writing

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class RunLocked(VlpromptError):
    """Another process holds the run directory."""


def _holder(f) -> str:
    f.seek(0)
    try:
        h = json.loads(f.read() or "{}")
    except ValueError:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"])) if "since" in h else "?"
    return f"pid {h.get('pid')} on host {h.get('host')} (since {since})"


@contextmanager
def hold_run(run_dir: str | Path, timeout: float | None = None, poll_s: float = 0.2):
    """Hold ``run_dir`` for the block; wait for another holder (at most ``timeout`` seconds, if given)."""
    run_dir = Path(run_dir)
    with writing(run_dir / LOCK_FILE):  # a full disk or a read-only folder: one clear message
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK_FILE, "a+")
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            log.info("run %s is held by %s; waiting for it", run_dir, holder)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise RunLocked(f"run directory {run_dir} is held by {_holder(f)}; wait for it to finish "
                                        "or stop that process") from None
                    time.sleep(poll_s)
        try:
            with writing(run_dir / LOCK_FILE):  # unbuffered: a failed write leaves nothing pending to retry
                os.ftruncate(f.fileno(), 0)
                os.write(f.fileno(), json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                 "since": time.time()}).encode())
            yield
        finally:
            os.ftruncate(f.fileno(), 0)
            fcntl.flock(f, fcntl.LOCK_UN)
