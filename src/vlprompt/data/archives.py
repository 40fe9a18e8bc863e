"""Checksums and safe unpacking of the datasets' archives (tar, tar.gz/.tgz, zip).

An archive from the internet is untrusted input: a member named ``../x`` or ``/etc/x``, a link that
points outside, or a device file could write outside the folder it is unpacked into. Tar members go
through Python's ``data`` extraction filter, which refuses all of these; zip members are checked the
same way before any byte is written. Either way the first offending member stops the unpacking
with an error that names the archive and the member.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from vlprompt.errors import DataError
from vlprompt.progress import Progress

MIB = 1 << 20
ALGORITHMS = ("md5", "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks with progress (the archives reach tens of GB)."""
    h = hashlib.new(algorithm)
    size = path.stat().st_size
    with open(path, "rb") as f:
        for block in Progress(iter(lambda: f.read(MIB), b""), f"{algorithm} {path.name}", unit="MiB",
                              total=math.ceil(size / MIB)):
            h.update(block)
    return h.hexdigest()


def checksum_problem(path: Path, checksum: str | None) -> str | None:
    """Why ``path`` does not match ``checksum`` ("md5:HEX" or "sha256:HEX"), or None when it matches or
    no checksum is known."""
    if checksum is None:
        return None
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        return f"{path} has {algorithm} {actual}, expected {expected}"
    return None


def unpack(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` (.tar, .tar.gz, .tgz or .zip) into the existing folder ``dest``, member by member,
    refusing any member that would land outside ``dest`` or is a link out of it or a device."""
    try:
        is_tar = tarfile.is_tarfile(archive)
    except (EOFError, zlib.error, gzip.BadGzipFile):  # a damaged compressed tar: reported as such below
        is_tar = True
    if zipfile.is_zipfile(archive):
        _unpack_zip(archive, dest)
    elif is_tar:
        _unpack_tar(archive, dest)
    else:
        raise DataError(f"{archive} is neither a tar nor a zip archive (damaged or incomplete download?); "
                        "download it again")


def _ticks(f, size: int, items: Iterator) -> Iterator:
    """Yield once per MiB of ``f`` consumed while working through ``items``: progress by compressed bytes."""
    done = 0
    for _ in items:
        now = min(f.tell(), size) // MIB
        yield from range(now - done)
        done = now
    yield from range(math.ceil(size / MIB) - done)


def _unpack_tar(archive: Path, dest: Path) -> None:
    size = archive.stat().st_size

    def members(tar: tarfile.TarFile):
        for member in tar:
            try:
                if member.name.startswith("/"):  # the filter would strip the slash; an official archive has none
                    raise tarfile.AbsolutePathError(member)
                tar.extract(member, dest, filter="data")
            except (tarfile.FilterError, tarfile.ExtractError) as exc:
                raise DataError(f"{archive}: member {member.name!r} is refused ({exc}); the archive is not the "
                                "official one, or it is damaged; nothing outside the target was written") from exc
            yield member

    try:
        with open(archive, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for _ in Progress(_ticks(f, size, members(tar)), f"unpack {archive.name}", unit="MiB",
                              total=math.ceil(size / MIB)):
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{archive} cannot be read to the end ({exc}); it is damaged or incomplete: "
                        "download it again") from exc


def _zip_target(archive: Path, info: zipfile.ZipInfo, dest: Path) -> Path | None:
    """Where a zip member goes, or None for a folder entry; a refused member raises."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    mode = info.external_attr >> 16
    why = None
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        why = "an absolute path"
    elif ".." in parts:
        why = "a path that leaves the target folder"
    elif stat.S_ISLNK(mode):
        why = "a symbolic link"
    elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: a zip written without Unix modes
        why = "not a regular file"
    if why:
        raise DataError(f"{archive}: member {name!r} is refused ({why}); the archive is not the official one, "
                        "or it is damaged; nothing outside the target was written")
    target = dest.joinpath(*parts)
    return None if info.is_dir() else target


def _unpack_zip(archive: Path, dest: Path) -> None:
    size = archive.stat().st_size
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            targets = [(_zip_target(archive, info, dest), info) for info in infos]  # all checked before writing
            total = sum(info.compress_size for info in infos)

            def members():
                consumed = 0
                done = 0
                for target, info in targets:
                    if target is None:
                        dest.joinpath(*PurePosixPath(info.filename).parts).mkdir(parents=True, exist_ok=True)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, MIB)
                    consumed += info.compress_size
                    now = consumed * math.ceil(size / MIB) // max(total, 1)
                    yield from range(now - done)
                    done = now

            for _ in Progress(members(), f"unpack {archive.name}", unit="MiB", total=math.ceil(size / MIB)):
                pass
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{archive} cannot be read ({exc}); it is damaged or incomplete: download it again") from exc
