"""What ``sandbox.files`` returns: directory entries and stat results, parsed from the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qbox.sdk._models import _int, _required, _str, _time, as_object


def join(directory: str, name: str) -> str:
    """``directory/name`` the way listings build paths (``/`` + ``a`` is ``/a``, not ``//a``)."""
    return directory.rstrip("/") + "/" + name


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listing. ``path`` is the listed directory joined with ``name``.

    ``is_dir`` is false for a symlink, even one pointing at a directory, so
    recursive listings never follow links. ``mode`` is the server's text
    (e.g. ``drwxr-xr-x``).
    """

    name: str
    path: str
    is_dir: bool = False
    size: int = 0
    mode: str = ""
    mtime: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any, directory: str) -> FileEntry:
        data = as_object(value, "a directory entry")
        name = _required(data, "name", "a directory entry")
        return cls(
            name=name,
            path=join(directory, name),
            is_dir=data.get("isDir") is True,
            size=_int(data, "size"),
            mode=_str(data, "mode"),
            mtime=_time(data, "mtime"),
            raw=data,
        )


@dataclass(frozen=True)
class FileStat:
    """What ``stat`` knows about a path; a missing path has ``exists`` false and nothing else."""

    path: str
    exists: bool
    size: int = 0
    mode: str = ""
    is_dir: bool = False
    is_symlink: bool = False
    symlink_target: str | None = None
    modified_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any, path: str) -> FileStat:
        data = as_object(value, "a stat result")
        return cls(
            path=_str(data, "path", path),
            exists=data.get("exists") is True,
            size=_int(data, "size"),
            mode=_str(data, "mode"),
            is_dir=data.get("isDir") is True,
            is_symlink=data.get("isSymlink") is True,
            symlink_target=_str(data, "symlinkTarget") or None,
            modified_at=_time(data, "modifiedAt"),
            raw=data,
        )
