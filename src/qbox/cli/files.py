"""``qbox sandboxes files``: copy, list, print, write and remove files in a sandbox.

A sandbox path is ``SANDBOX:PATH``, SANDBOX an ``sb_`` id or a name label as
everywhere else. As in scp, an argument is a sandbox path when a ``:`` comes
before any ``/`` (a local file whose name holds a colon is written
``./a:b``); it is split at that first ``:`` (ids and names never contain
one). PATH is absolute, or relative to the sandbox user's home. Every transfer
is streamed; nothing is held whole in memory.
"""

from __future__ import annotations

import os
import stat as stat_module
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.cli.sandbox_ref import resolve_sandbox
from qbox.core.errors import NotFoundError
from qbox.sdk import FileEntry, Files, FileStat, Sandbox

PROGRESS_MIN_BYTES = 1024 * 1024
LIST_COLUMNS = ("MODE", "SIZE", "MODIFIED")


@dataclass(frozen=True)
class RemotePath:
    sandbox: str  # an id or a name, as given: resolved when the command connects
    path: str

    def __str__(self) -> str:
        return f"{self.sandbox}:{self.path}"


def parse_remote(arg: str) -> RemotePath | None:
    """``SANDBOX:PATH`` as a ``RemotePath``; anything else is a local path (``None``)."""
    sandbox, sep, path = arg.partition(":")
    if not sep or not sandbox or "/" in sandbox:
        return None
    if not path:
        raise click.BadParameter(f"{arg!r} has no path after the ':'")
    return RemotePath(sandbox, path)


class RemotePathType(click.ParamType[RemotePath]):
    name = "SANDBOX:PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> RemotePath:
        if isinstance(value, RemotePath):
            return value
        remote = parse_remote(str(value))
        if remote is None:
            self.fail(f"expected a sandbox path like sb_ID:/path or NAME:/path, got {value!r}", param, ctx)
        return remote


REMOTE = RemotePathType()


def _octal_mode(_ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value.removeprefix("0o"), 8)
    except ValueError:
        raise click.BadParameter(f"expected octal permissions such as 644, got {value!r}", param=param) from None
    if not 0 <= mode <= 0o7777:
        raise click.BadParameter(f"{value!r} is not a permission mode (at most 7777)", param=param)
    return mode


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


class ProgressBar:
    """``on_progress`` for the SDK: a bar on stderr for transfers of 1 MiB or more, on a terminal only."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._enabled = _stderr_is_tty()
        self._bar: Any = None
        self._shown = 0

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None:
            if not self._enabled or total is None or total < PROGRESS_MIN_BYTES:
                return
            self._bar = click.progressbar(length=total, label=self._label, file=sys.stderr)
            self._bar.render_progress()
        self._bar.update(done - self._shown)
        self._shown = done

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.render_finish()


@contextmanager
def sandbox_files(state: CliState, target: RemotePath) -> Iterator[Files]:
    sandbox = Sandbox.connect(resolve_sandbox(state, target.sandbox), config=state.config())
    try:
        yield sandbox.files
    finally:
        sandbox.close()


@contextmanager
def local_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Local file trouble as a one-line click error (exit 1), not a traceback."""
    try:
        yield
    except OSError as exc:
        raise click.FileError(str(exc.filename or path), hint=exc.strerror or str(exc)) from exc


@click.group("files")
def files() -> None:
    """Copy, list, print, write and remove files in a sandbox (paths are SANDBOX:PATH, SANDBOX an id or name)."""


@files.command("cp")
@click.argument("src")
@click.argument("dst")
@click.option("--mode", callback=_octal_mode, help="Octal permissions of an upload (default: the local file's).")
@pass_state
def cp(state: CliState, src: str, dst: str, mode: int | None) -> None:
    """Copy SRC to DST; exactly one of them is a sandbox path (SANDBOX:PATH).

    A DST that is a local directory, or a sandbox path ending in '/', gets the
    source's file name. Transfers are streamed, with a progress bar on a
    terminal for files of 1 MiB or more.
    """
    source, target = parse_remote(src), parse_remote(dst)
    if (source is None) == (target is None):
        raise click.UsageError("exactly one of SRC and DST must be a sandbox path (SANDBOX:PATH)")
    if target is not None:
        _upload(state, Path(src), target, mode)
    elif source is not None:
        _download(state, source, Path(dst))


def _upload(state: CliState, local: Path, target: RemotePath, mode: int | None) -> None:
    with local_errors(local):
        info = local.stat()
    if stat_module.S_ISDIR(info.st_mode):
        raise click.UsageError(f"{local} is a directory; cp copies single files")
    remote = target.path + local.name if target.path.endswith("/") else target.path
    progress = ProgressBar(f"{local.name} -> {target.sandbox}")
    with sandbox_files(state, target) as sandbox, local_errors(local):
        file_mode = mode if mode is not None else stat_module.S_IMODE(info.st_mode)
        try:
            sandbox.upload(local, remote, mode=file_mode, on_progress=progress)
        finally:
            progress.finish()


def _download(state: CliState, source: RemotePath, local: Path) -> None:
    if local.is_dir():
        local = local / PurePosixPath(source.path).name
    progress = ProgressBar(f"{source.sandbox} -> {local.name}")
    with sandbox_files(state, source) as sandbox, local_errors(local):
        try:
            sandbox.download(source.path, local, on_progress=progress)
        finally:
            progress.finish()


def _entry_row(entry: FileEntry, show_path: bool) -> list[Any]:
    name = entry.path if show_path else entry.name + ("/" if entry.is_dir else "")
    return [entry.mode, entry.size, entry.mtime, name]


@files.command("ls")
@click.argument("target", type=REMOTE)
@click.option("--depth", type=click.IntRange(min=1), default=1, show_default=True, help="Levels to list.")
@click.option("-r", "--recursive", is_flag=True, help="Every level (symlinks are never followed).")
@json_option
@pass_state
def ls(state: CliState, target: RemotePath, depth: int, recursive: bool) -> None:
    """List a directory in a sandbox."""
    with sandbox_files(state, target) as sandbox:
        entries = sandbox.list(target.path, depth=None if recursive else depth)
    if state.json:
        state.emit_json([{**entry.raw, "path": entry.path} for entry in entries])
        return
    deep = recursive or depth > 1
    state.emit_table((*LIST_COLUMNS, "PATH" if deep else "NAME"), [_entry_row(e, deep) for e in entries])


@files.command("cat")
@click.argument("target", type=REMOTE)
@pass_state
def cat(state: CliState, target: RemotePath) -> None:
    """Print a file's raw bytes to stdout, as they arrive."""
    out = sys.stdout.buffer
    with sandbox_files(state, target) as sandbox:
        with sandbox.read(target.path, format="stream") as stream:
            for chunk in stream:
                out.write(chunk)
    out.flush()


@files.command("write")
@click.argument("target", type=REMOTE)
@click.option("--mode", default="644", show_default=True, callback=_octal_mode, help="Octal permissions.")
@click.option("-a", "--append", is_flag=True, help="Add to the end of the file instead of replacing it.")
@pass_state
def write(state: CliState, target: RemotePath, mode: int, append: bool) -> None:
    """Write stdin to a file in a sandbox (streamed; parent directories are created)."""
    stdin = sys.stdin.buffer
    with sandbox_files(state, target) as sandbox:
        if append:
            sandbox.append(target.path, stdin, mode=mode)
        else:
            sandbox.write(target.path, stdin, mode=mode)


def _kind(info: FileStat) -> str:
    if info.is_symlink:
        return "symlink"
    return "directory" if info.is_dir else "file"


@files.command("stat")
@click.argument("target", type=REMOTE)
@json_option
@pass_state
def stat(state: CliState, target: RemotePath) -> None:
    """Show what is at a path in a sandbox (exit 4 if nothing is)."""
    with sandbox_files(state, target) as sandbox:
        info = sandbox.stat(target.path)
    if not info.exists:
        raise NotFoundError(f"{target}: no such file or directory", details={"path": target.path})
    if state.json:
        state.emit_json(info.raw)
        return
    state.emit_fields(
        [
            ("Path", info.path),
            ("Type", _kind(info)),
            ("Size", info.size),
            ("Mode", info.mode),
            ("Target", info.symlink_target),
            ("Modified", info.modified_at),
        ]
    )


@files.command("mkdir")
@click.argument("target", type=REMOTE)
@click.option("--mode", default="755", show_default=True, callback=_octal_mode, help="Octal permissions.")
@click.option("--parents/--no-parents", default=True, show_default=True, help="Create missing parents too.")
@pass_state
def mkdir(state: CliState, target: RemotePath, mode: int, parents: bool) -> None:
    """Create a directory in a sandbox."""
    with sandbox_files(state, target) as sandbox:
        sandbox.mkdir(target.path, mode=mode, parents=parents)


@files.command("rm")
@click.argument("target", type=REMOTE)
@click.option("-r", "--recursive", is_flag=True, help="Remove a directory and everything in it.")
@pass_state
def rm(state: CliState, target: RemotePath, recursive: bool) -> None:
    """Remove a file (or, with -r, a directory tree) in a sandbox."""
    with sandbox_files(state, target) as sandbox:
        sandbox.remove(target.path, recursive=recursive)
