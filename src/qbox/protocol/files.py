"""Files in a sandbox: ``/sandboxes/{id}/files/…`` (stat, list, content, mkdir, rename).

Paths and options travel in the query (contents are raw bytes both ways);
mkdir and rename take JSON.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from qbox.protocol.wire import Wire, WireTime


class FileStat(Wire):
    """The public stat object (docs/api.md, "Files"); a missing path has ``exists: false``."""

    path: str
    exists: bool = False
    size: int = 0
    # ``ls -l`` style, e.g. "-rw-r--r--"; "" when it does not exist.
    mode: str = ""
    is_dir: bool = False
    is_symlink: bool = False
    symlink_target: str = ""
    modified_at: WireTime | None = None


class FileEntry(Wire):
    name: str
    is_dir: bool
    size: int
    mode: str
    mtime: WireTime | None


class FileWritten(Wire):
    path: str
    size: int


class FileQuery(Wire):
    """The query of stat, list, read and delete: a sandbox path, as whom."""

    OMIT_NONE = frozenset({"user"})

    path: str
    user: str | None = None


class WriteQuery(FileQuery):
    """PUT ``…/files/content``: ``mode`` is octal text (``644``); past ``maxBytes`` (the
    control plane's cap) 413 and nothing is kept."""

    OMIT_NONE = frozenset({"user", "max_bytes"})

    mode: str = "644"
    create_parents: bool = True
    append: bool = False
    max_bytes: int | None = Field(default=None, ge=0)


class Mkdir(Wire):
    model_config = ConfigDict(extra="forbid")
    OMIT_NONE = frozenset({"user"})

    path: str
    mode: int = Field(default=0o755, ge=0, le=0o7777)
    parents: bool = True
    user: str | None = None


class Rename(Wire):
    model_config = ConfigDict(extra="forbid")
    OMIT_NONE = frozenset({"user"})

    src: str
    dst: str
    user: str | None = None
