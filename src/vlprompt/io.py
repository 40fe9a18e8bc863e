"""Atomic file writing: a file is either complete or absent, even if the process dies mid-write.

A write goes to a hidden temporary ``.NAME.HOST.PID.XXXX.tmp`` beside the target and is renamed onto
it; the next write of the same target removes what dead writers left. Finished files and folders
get the user's umask, like any other file.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from vlprompt.errors import VlpromptError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_STALE_UNOWNED_S = 3600  # temporaries without an owner in their name (older vlprompt) count as stale after this


def _temp_prefix(path: Path) -> str:
    """``.NAME.HOST.PID.``: the owner of a temporary is in its name, so a later writer can tell a dead
    writer's leftover from a live writer's work in progress."""
    return f".{path.name}.{_HOST}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of writes of ``path`` that were interrupted (their process is gone).

    A temporary of a live process on this machine is kept; one of another machine (a shared file
    system) is kept too, since its process cannot be asked. Temporaries whose name holds no owner
    are removed once they are an hour old.
    """
    owned = re.compile(rf"\.{re.escape(path.name)}\.([A-Za-z0-9-]+)\.(\d+)\.[A-Za-z0-9_]+\.tmp")
    unowned = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = owned.fullmatch(tmp.name)
        if match:
            stale = match.group(1) == _HOST and not _alive(int(match.group(2)))
        else:
            try:
                age = time.time() - tmp.lstat().st_mtime
                stale = unowned.fullmatch(tmp.name) is not None and age > _STALE_UNOWNED_S
            except FileNotFoundError:
                continue
        if stale:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class OutputExistsError(VlpromptError, FileExistsError):
    """An output folder already holds something that this kind of output does not own."""


def _foreign_folder(path: Path, is_own: Callable[[Path], bool]) -> bool:
    if not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_dir():
        return True
    return any(path.iterdir()) and not is_own(path)


def has_format(folder: Path, file: str, family: str) -> bool:
    """Whether ``folder/file`` is a JSON object whose ``format`` is of ``family`` (any version): how an
    output folder recognises an earlier output of its own kind."""
    try:
        fmt = json.loads((folder / file).read_text()).get("format")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False
    return isinstance(fmt, str) and fmt.split("/")[0] == family


@contextmanager
def atomic_dir(path: str | os.PathLike, is_own: Callable[[Path], bool], what: str = "output"):
    """Yield a temporary directory; it replaces ``path`` only if the block succeeds.

    An existing ``path`` is replaced only when it is an empty folder or ``is_own(path)`` recognises
    an earlier output of the same kind; anything else (a user's folder, a file, ``.``) is refused
    with ``OutputExistsError`` before anything is written or removed.
    """
    path = Path(os.path.abspath(path))
    if _foreign_folder(path, is_own):
        raise OutputExistsError(f"{path} already exists and is not a vlprompt {what}; nothing in it was "
                                "changed. Choose a new or empty folder (an earlier output of the same kind is "
                                "replaced)")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the finished directory gets the usual permissions
    old = None
    try:
        yield tmp
        if path.exists():  # the earlier output moves aside and comes back if the new one cannot take its place
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
            os.replace(path, old / "previous")
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old / "previous", path)
                raise
        else:
            os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and release it."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return path
