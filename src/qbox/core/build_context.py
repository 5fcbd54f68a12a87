"""A Docker build context as a tar (plain or gzip): checked before any build starts, and
unpacked on the agent with the same rules.

A context is a user's archive unpacked on a host, so every member must stay
inside it: no absolute names, no ``..``, no links that point out of it, no
device files or fifos, a bounded number of entries. Anything else is refused
as a whole with a 400 naming the first offending member.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path
from typing import IO

from qbox.core.errors import ValidationError

__all__ = ["EMPTY_CONTEXT", "MAX_CONTEXT_ENTRIES", "check_context", "extract_context"]

MAX_CONTEXT_ENTRIES = 100_000
# An empty tar: the context of a Dockerfile sent without one.
EMPTY_CONTEXT = b"\0" * 1024

_FIELD = "buildContext"


def _refuse(message: str) -> ValidationError:
    return ValidationError(f"build context: {message}", details={"field": _FIELD})


def _inside(name: str) -> bool:
    normal = posixpath.normpath(name)
    return not name.startswith("/") and normal != ".." and not normal.startswith("../")


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if not name or "\0" in name:
        raise _refuse("a member has an empty name")
    if name.startswith("/"):
        raise _refuse(f"{name!r} is an absolute path")
    if ".." in name.split("/"):
        raise _refuse(f"{name!r} contains '..'")
    if member.isdev() or member.isfifo():
        raise _refuse(f"{name!r} is a device file or a fifo")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise _refuse(f"{name!r} is not a file, directory or link")
    if member.islnk() and not _inside(member.linkname):
        raise _refuse(f"{name!r} links to {member.linkname!r}, outside the context")
    if member.issym():
        target = member.linkname
        resolved = posixpath.join(posixpath.dirname(name), target)
        if target.startswith("/") or not _inside(resolved):
            raise _refuse(f"{name!r} is a symlink to {target!r}, outside the context")


def _open(source: IO[bytes]) -> tarfile.TarFile:
    try:
        # "r:*": plain or gzip, told by its first bytes.
        return tarfile.open(fileobj=source, mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _refuse(f"not a tar or tar.gz archive ({exc})") from None


def _read_through(tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """A member's data, read to its end: a truncated archive fails here, not in the build."""
    handle = tar.extractfile(member)
    if handle is None:
        return
    remaining = member.size
    while remaining > 0:
        chunk = handle.read(min(remaining, 1024 * 1024))
        if not chunk:
            raise _refuse(f"the archive ends inside {member.name!r}")
        remaining -= len(chunk)


def check_context(source: bytes | IO[bytes], max_entries: int = MAX_CONTEXT_ENTRIES) -> int:
    """The number of members, or ValidationError (400) for an archive that may not be used."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    if isinstance(source, bytes) and not source.strip(b"\0"):
        return 0
    count = 0
    with _open(stream) as tar:
        try:
            for member in tar:
                count += 1
                if count > max_entries:
                    raise _refuse(f"more than {max_entries} entries")
                _check_member(member)
                if member.isfile():
                    _read_through(tar, member)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise _refuse(f"the archive is damaged ({exc})") from None
    return count


def extract_context(archive: Path, dest: Path, max_entries: int = MAX_CONTEXT_ENTRIES) -> None:
    """Unpack a context checked by ``check_context`` into ``dest`` (checked again, and
    tarfile's ``data`` filter as a second lock: no special files, modes made safe)."""
    dest.mkdir(parents=True, exist_ok=True)
    with archive.open("rb") as handle:
        if not handle.read(1024).strip(b"\0") and not handle.read(1):
            return
    with archive.open("rb") as handle:
        check_context(handle, max_entries)
    with archive.open("rb") as handle, _open(handle) as tar:
        try:
            tar.extractall(dest, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise _refuse(f"cannot unpack ({exc})") from None
