"""File operations in a sandbox, written once for sync and async (see ``_steps``).

Wire shapes (WIRE_PROTOCOL.md §4.4): every read goes through
``GET …/download?path=`` (raw bytes); writes are ``PUT …/file?path=&mode=``
with the raw bytes as body and no Content-Type (``append=true`` appends);
listings are one ``GET …/files?path=`` per directory; mkdir and rename take
a JSON body. Paths may be absolute or relative to the sandbox user's home.

Only buffered reads are retried: an upload's source is consumed as it is
sent and cannot be replayed, and a stream has already been handed out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qbox.core.errors import FileEncodingError
from qbox.sdk._api import Api, ParamValue
from qbox.sdk._file_models import FileEntry, FileStat
from qbox.sdk._models import as_list
from qbox.sdk._sandbox_ops import sandbox_path
from qbox.sdk._steps import Body, Op

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
_SELF_OR_PARENT = frozenset({".", ".."})


def _checked_path(path: str, what: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty string")
    return path


def _checked_mode(mode: int) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be a permission number such as 0o644, got {mode!r}")
    return mode


def decode_text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileEncodingError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); read it with format='bytes'",
            details={"path": path, "offset": exc.start},
        ) from exc


def _download_params(path: str) -> dict[str, ParamValue]:
    return {"path": _checked_path(path)}


def read_bytes(api: Api, sandbox_id: str, path: str) -> Op[bytes]:
    request = api.build("GET", sandbox_path(sandbox_id, "/download"), params=_download_params(path))
    response = yield from api.exchange(request)
    return response.content


def read_text(api: Api, sandbox_id: str, path: str) -> Op[str]:
    return decode_text((yield from read_bytes(api, sandbox_id, path)), path)


def open_read(api: Api, sandbox_id: str, path: str) -> Op[Any]:
    """The file's body, unread: the driver's ``ByteStream`` (sync) or ``AsyncByteStream`` (async).

    No timeout: the body is read at the consumer's pace, however long it is.
    """
    request = api.build("GET", sandbox_path(sandbox_id, "/download"), params=_download_params(path))
    response = yield from api.open(replace(request, timeout=None))
    return response.stream


def write(
    api: Api,
    sandbox_id: str,
    path: str,
    body: Body,
    *,
    mode: int = DEFAULT_FILE_MODE,
    create_parents: bool = True,
    append: bool = False,
) -> Op[None]:
    params: dict[str, ParamValue] = {"path": _checked_path(path), "mode": format(_checked_mode(mode), "o")}
    if not create_parents:
        params["createParents"] = False  # absent means true
    if append:
        params["append"] = True
    request = api.build("PUT", sandbox_path(sandbox_id, "/file"), params=params, content=body)
    yield from api.exchange(request, retry=False)


def list_dir(api: Api, sandbox_id: str, path: str, depth: int | None = 1) -> Op[list[FileEntry]]:
    """Entries of ``path``; with ``depth`` > 1 (``None``: no limit) each directory is followed by its
    own entries. Only entries the server marks ``isDir`` are entered, so symlinks never are."""
    if depth is not None and (isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth must be 1 or more (or None for no limit), got {depth!r}")
    rows = as_list(
        (yield from api.get(sandbox_path(sandbox_id, "/files"), params={"path": _checked_path(path)})),
        "a directory listing",
    )
    entries: list[FileEntry] = []
    for row in rows:
        entry = FileEntry.from_wire(row, path)
        if entry.name in _SELF_OR_PARENT:
            continue  # would recurse forever
        entries.append(entry)
        if entry.is_dir and (depth is None or depth > 1):
            deeper = None if depth is None else depth - 1
            entries += yield from list_dir(api, sandbox_id, entry.path, deeper)
    return entries


def stat(api: Api, sandbox_id: str, path: str) -> Op[FileStat]:
    data = yield from api.get(sandbox_path(sandbox_id, "/stat"), params={"path": _checked_path(path)})
    return FileStat.from_wire(data, path)


def exists(api: Api, sandbox_id: str, path: str) -> Op[bool]:
    return (yield from stat(api, sandbox_id, path)).exists


def remove(api: Api, sandbox_id: str, path: str, *, recursive: bool = False) -> Op[None]:
    params: dict[str, ParamValue] = {"path": _checked_path(path)}
    if recursive:
        params["recursive"] = True  # sent only when asked for
    yield from api.delete(sandbox_path(sandbox_id, "/file"), params=params)


def mkdir(api: Api, sandbox_id: str, path: str, *, mode: int = DEFAULT_DIR_MODE, parents: bool = True) -> Op[None]:
    # Unlike PUT's octal string, mkdir's mode is the permission number as a JSON integer (0o755 -> 493).
    body = {"path": _checked_path(path), "mode": _checked_mode(mode), "parents": bool(parents)}
    yield from api.post(sandbox_path(sandbox_id, "/files/mkdir"), json=body)


def rename(api: Api, sandbox_id: str, src: str, dst: str) -> Op[None]:
    body = {"src": _checked_path(src, "src"), "dst": _checked_path(dst, "dst")}
    yield from api.post(sandbox_path(sandbox_id, "/files/rename"), json=body)
