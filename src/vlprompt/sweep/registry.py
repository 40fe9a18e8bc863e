"""The run registry: one SQLite file beside the run directories, one row per run spec.

Every state change is one transaction, and a spec is claimed inside ``BEGIN IMMEDIATE`` (SQLite's
write lock), so two ``sweep run`` processes on one registry never claim the same spec. A row holds
who runs it (host, pid and the process's start time, so a reused pid is not mistaken for it); a
running row whose process is gone (checked on its own host) may be claimed again, or is recorded as
done when its run finished before the process died. A finished row records the code version and the
hash of its data (``engine.split.split_hash``); when either differs from the current one the row is
*stale*: reported, and rerun only on request.
WAL mode lets readers (``sweep status``, the report) read while a sweep writes.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from vlprompt.errors import ConfigError
from vlprompt.version import __version__

REGISTRY_FILE = "registry.sqlite"
STATES = ("pending", "running", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    spec_id TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    protocol TEXT,
    method TEXT,
    dataset TEXT,
    seed INTEGER,
    keys TEXT NOT NULL DEFAULT '{}',
    run_dir TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    split_hash TEXT,
    version TEXT,
    host TEXT,
    pid INTEGER,
    pid_start INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started REAL,
    ended REAL,
    results TEXT
)
"""


@dataclass
class Row:
    """One registry row; ``config``, ``keys`` and ``results`` decoded from JSON."""

    spec_id: str
    config_hash: str
    config: dict
    protocol: str | None
    method: str | None
    dataset: str | None
    seed: int | None
    keys: dict
    run_dir: str
    state: str
    split_hash: str | None
    version: str | None
    host: str | None
    pid: int | None
    pid_start: int | None
    attempts: int
    error: str | None
    started: float | None
    ended: float | None
    results: dict | None


def host_name() -> str:
    return socket.gethostname()


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def process_alive(host: str | None, pid: int | None, start: int | None = None) -> bool:
    """Whether the process that holds a row may still run; another host's processes count as alive."""
    if host != host_name():
        return True
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True
    # a killed child nobody has waited for yet is a zombie; a pid with another start time was reused
    return fields[0] != "Z" and (start is None or int(fields[19]) == start)


def registry_path(path: str | Path) -> Path:
    """The registry file itself, or the one inside a runs folder."""
    path = Path(path).expanduser()
    return path / REGISTRY_FILE if path.is_dir() or not path.suffix else path


class RunRegistry:
    """A connection to one run registry file (created on first use); ``vlprompt.registry.Registry`` is the
    other kind of registry, of the names configs use."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = registry_path(path)
        if not create and not self.path.is_file():
            raise ConfigError(f"no run registry at {self.path}; give the folder a sweep wrote (its registry.sqlite) "
                              "or run `vlprompt sweep run SPEC` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: every transaction below is explicit
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=60000")
            self.db.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ConfigError(f"{self.path} is not a vlprompt run registry ({exc}); give a sweep's output folder "
                              "or its registry.sqlite") from None

    def close(self) -> None:
        self.db.close()

    def _transaction(self, work):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            out = work()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return out

    def add(self, specs) -> None:
        """Register run plans (``protocols.common.RunPlan``) not yet known, as pending; known ones keep their state."""
        def work():
            for s in specs:
                self.db.execute(
                    "INSERT OR IGNORE INTO runs (spec_id, config_hash, config, protocol, method, dataset, seed, keys, "
                    "run_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (s.spec_id, s.config.run_id(), json.dumps(s.config.to_dict(), sort_keys=True), s.protocol,
                     s.method, s.dataset, s.seed, json.dumps(s.keys, sort_keys=True), str(s.run_dir)))
        self._transaction(work)

    def claim(self, spec_ids: list[str]) -> Row | None:
        """Atomically take the first of ``spec_ids`` that is pending or held by a dead process."""
        def work():
            rows = self.db.execute("SELECT spec_id, state, host, pid, pid_start FROM runs "
                                   "WHERE state IN ('pending', 'running')").fetchall()
            states = {r["spec_id"]: r for r in rows}
            for spec_id in spec_ids:
                r = states.get(spec_id)
                if r is None or (r["state"] == "running" and process_alive(r["host"], r["pid"], r["pid_start"])):
                    continue
                self.db.execute("UPDATE runs SET state='running', host=?, pid=?, pid_start=?, started=?, ended=NULL, "
                                "error=NULL, attempts=attempts+1 WHERE spec_id=?",
                                (host_name(), os.getpid(), process_start(os.getpid()), time.time(), spec_id))
                return spec_id
            return None
        claimed = self._transaction(work)
        return self.get(claimed) if claimed else None

    def finish(self, spec_id: str, results: dict) -> None:
        self._transaction(lambda: self._finish(spec_id, results, time.time()))

    def _finish(self, spec_id: str, results: dict, ended: float) -> None:
        self.db.execute(
            "UPDATE runs SET state='done', results=?, split_hash=?, version=?, ended=?, error=NULL WHERE spec_id=?",
            (json.dumps(results, sort_keys=True), results.get("split_hash"), __version__, ended, spec_id))

    def finish_orphans(self, finished) -> list[str]:
        """Record as done the running rows whose process died after their run finished.

        ``finished(row)`` gives (results, end time) of a finished run, else None. A driver killed
        between a run's end and its record would otherwise leave the row "running" for ever.
        """
        def orphans() -> list[Row]:
            rows = self.db.execute("SELECT * FROM runs WHERE state='running'").fetchall()
            return [row for row in map(_decode, rows) if not process_alive(row.host, row.pid, row.pid_start)]

        def work() -> list[str]:
            done = []
            for row in orphans():  # again under the write lock: another process may have claimed it meanwhile
                found = finished(row)
                if found is not None:
                    self._finish(row.spec_id, *found)
                    done.append(row.spec_id)
            return done

        return self._transaction(work) if orphans() else []

    def fail(self, spec_id: str, error: str) -> None:
        self._transaction(lambda: self.db.execute(
            "UPDATE runs SET state='failed', error=?, ended=? WHERE spec_id=?", (error, time.time(), spec_id)))

    def reset(self, spec_ids: list[str]) -> None:
        """Make finished or failed rows pending again (a rerun on request)."""
        def work():
            for spec_id in spec_ids:
                self.db.execute("UPDATE runs SET state='pending', results=NULL, error=NULL, split_hash=NULL, "
                                "version=NULL WHERE spec_id=? AND state IN ('done', 'failed')", (spec_id,))
        self._transaction(work)

    def get(self, spec_id: str) -> Row | None:
        r = self.db.execute("SELECT * FROM runs WHERE spec_id=?", (spec_id,)).fetchone()
        return _decode(r) if r else None

    def rows(self) -> list[Row]:
        return [_decode(r) for r in self.db.execute("SELECT * FROM runs ORDER BY rowid")]

    def states(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT spec_id, state FROM runs").fetchall())


def _decode(r: sqlite3.Row) -> Row:
    d = dict(r)
    d["config"] = json.loads(d["config"])
    d["keys"] = json.loads(d["keys"])
    d["results"] = json.loads(d["results"]) if d["results"] else None
    return Row(**d)


def stale_reason(row: Row, current_split_hash: str | None) -> str | None:
    """Why a finished row no longer stands for what its spec would give now, or None."""
    if row.state != "done":
        return None
    if row.version != __version__:
        return f"recorded with vlprompt {row.version}, now {__version__}"
    if row.split_hash != current_split_hash:
        return "its data changed (the sampled training split, the test images or the class names)"
    return None
