"""Every file vlprompt writes goes through here: complete or absent, with the user's umask, and a clear error.

A write goes to a hidden temporary ``.NAME.HOST.PID.XXXX.tmp`` beside the target and is renamed onto
it; the next write of the same target removes what dead writers left. Finished files and folders
get the user's umask, like any other file. Writers hand over bytes (``write_bytes``), so a full
disk, an exceeded quota or a read-only file system surfaces as an ``OSError`` of the write itself,
which becomes one ``WriteError`` naming the file system and the file, and the temporary is removed.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from vlprompt.errors import VlpromptError, WriteError


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (no window with umask 0)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_STALE_UNOWNED_S = 3600  # temporaries without an owner in their name (older vlprompt) count as stale after this
#: errors of the storage itself: whatever file an OSError names, with one of these the write failed
_STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG")
                            if hasattr(errno, name))


def _file_system(path: Path) -> str:
    """The mount point holding ``path``, with its type where /proc tells it: ``/mnt/small (tmpfs)``."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    while not os.path.ismount(place) and place != place.parent:
        place = place.parent
    kind = ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()  # /proc writes a space in a mount point as \040
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]) if len(fields) > 2 else ""
                if point == str(place):
                    kind = fields[2]  # the last mount on a point is the visible one
    except OSError:
        pass
    return f"{place} ({kind})" if kind else str(place)


def write_error(code: int | None, path: str | os.PathLike, reason: str | None = None) -> WriteError:
    """The ``WriteError`` for an OSError ``code`` while writing ``path``: what happened, where, what to do."""
    path = Path(path)
    if code == errno.ENOSPC:
        text = f"no space left on {_file_system(path)} while writing {path}; free some space or write elsewhere"
    elif code == getattr(errno, "EDQUOT", None):
        text = f"disk quota exceeded on {_file_system(path)} while writing {path}; free some space or write elsewhere"
    elif code == errno.EROFS:
        text = f"{_file_system(path)} is read-only: cannot write {path}; choose a writable folder"
    elif code == errno.EFBIG:
        text = f"{path} is too large for {_file_system(path)}; write it elsewhere"
    elif code in (errno.EACCES, errno.EPERM):
        text = f"permission denied while writing {path}; choose a folder you can write to"
    else:
        text = f"cannot write {path}: {reason or os.strerror(code or 0)}"
    error = WriteError(text)
    error.errno, error.strerror, error.filename = code, reason, str(path)
    return error


def _under(name, folder: Path) -> bool:
    return name is not None and Path(os.path.abspath(os.fsdecode(name))).is_relative_to(folder)


@contextmanager
def _write_errors(target: Path, temporary: Path | None = None):
    """Turn the OSError of a write into one ``WriteError`` naming ``target`` (not the hidden temporary).

    Storage errors (no space, quota, read-only, too large) are write errors whatever they name; any
    other OSError is one only when it names ``temporary`` (or a file inside it). A ``WriteError`` that
    names a file inside the temporary folder is renamed to the file's final place.
    """
    try:
        yield
    except WriteError as exc:
        if temporary is None or not _under(exc.filename, temporary):
            raise
        raise write_error(exc.errno, target / Path(exc.filename).relative_to(temporary), exc.strerror) from None
    except OSError as exc:
        if temporary is not None and _under(exc.filename, temporary):
            inside = Path(os.path.abspath(os.fsdecode(exc.filename))).relative_to(temporary)
            raise write_error(exc.errno, target / inside if inside.parts else target, exc.strerror) from None
        if temporary is None or exc.errno in _STORAGE_ERRNOS:
            raise write_error(exc.errno, target, exc.strerror) from None
        raise


def writing(path: str | os.PathLike):
    """For the few files written in place (a lock file must keep its inode): the block's OSErrors become
    one ``WriteError`` naming ``path``, as for the atomic writers."""
    return _write_errors(Path(os.path.abspath(path)))


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
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    For writers that need a file name (matplotlib); everything else hands bytes to ``write_bytes``.
    A failed write raises ``WriteError`` and leaves no temporary."""
    path = Path(os.path.abspath(path))
    tmp = None
    try:
        with _write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
            tmp = Path(name)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
        with _write_errors(path, tmp):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``: the one writer of every file vlprompt makes."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def place_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put ``source``'s bytes at ``target`` inside a private folder (``atomic_dir``): a hard link where the
    file system allows (no bytes copied; vlprompt replaces files, never edits them in place, so the two
    names keep the same content), else a copy."""
    with _write_errors(Path(target)):
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


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
    with ``OutputExistsError`` before anything is written or removed. The folder is private until it
    is renamed, so files in it may be written with ``write_bytes`` or any writer that creates files
    with plain ``open`` (never one that makes its own 0600 temporary, as safetensors' ``save_file``
    does); a failed write raises ``WriteError`` naming the file's final place, and nothing stays.
    """
    path = Path(os.path.abspath(path))
    if _foreign_folder(path, is_own):
        raise OutputExistsError(f"{path} already exists and is not a vlprompt {what}; nothing in it was "
                                "changed. Choose a new or empty folder (an earlier output of the same kind is "
                                "replaced)")
    tmp = old = None
    try:
        with _write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the finished directory gets the usual permissions
        with _write_errors(path, tmp):
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
