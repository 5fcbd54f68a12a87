from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qbox.agent.files import SandboxFiles
from qbox.core.errors import (
    ConflictError,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)

CANARY = b"host secret\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rootfs = tmp_path / "root"
    (rootfs / "home" / "user").mkdir(parents=True)
    return rootfs


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "canary.txt"
    path.write_bytes(CANARY)
    return path


@pytest.fixture
def files(root: Path) -> SandboxFiles:
    return SandboxFiles(root)


def _read(files: SandboxFiles, path: str) -> bytes:
    handle, size = files.open_read(path)
    with handle:
        data = handle.read()
    assert len(data) == size
    return data


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "qbox-tmp" in p.name]


async def test_write_then_read_back(files: SandboxFiles, root: Path) -> None:
    result = await files.write("notes.txt", [b"hello ", b"world"], mode=0o600)
    assert result == {"path": "/home/user/notes.txt", "size": 11}
    assert _read(files, "/home/user/notes.txt") == b"hello world"
    on_disk = root / "home/user/notes.txt"
    assert on_disk.stat().st_mode & 0o777 == 0o600
    assert files.stat("notes.txt")["mode"] == "-rw-------"


async def test_write_accepts_async_chunks_and_replaces(files: SandboxFiles) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"a" * 70000, b"b"):
            yield part

    await files.write("/data.bin", [b"old"])
    await files.write("/data.bin", chunks())
    assert _read(files, "/data.bin") == b"a" * 70000 + b"b"


async def test_failed_write_leaves_no_temp_file_and_keeps_the_old_one(
        files: SandboxFiles, root: Path) -> None:
    await files.write("/f.txt", [b"original"])

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await files.write("/f.txt", failing())
    with pytest.raises(PayloadTooLargeError):
        await files.write("/f.txt", [b"x" * 10, b"y" * 10], max_bytes=15)
    assert _read(files, "/f.txt") == b"original"
    assert _leftovers(root) == []


async def test_disk_full_is_insufficient_storage(files: SandboxFiles, root: Path) -> None:
    def disk_fills() -> Iterator[bytes]:
        yield b"some"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InsufficientStorageError):
        await files.write("/big.bin", disk_fills())
    assert not (root / "big.bin").exists()
    assert _leftovers(root) == []


async def test_write_creates_parents_only_when_asked(files: SandboxFiles, root: Path) -> None:
    with pytest.raises(NotFoundError):
        await files.write("/a/b/c.txt", [b"x"], create_parents=False)
    await files.write("/a/b/c.txt", [b"x"])
    assert (root / "a/b/c.txt").read_bytes() == b"x"


async def test_write_over_a_directory_is_a_conflict(files: SandboxFiles) -> None:
    files.mkdir("/dir")
    with pytest.raises(ConflictError):
        await files.write("/dir", [b"x"])


async def test_list_excludes_dots_and_symlinked_dirs_are_not_dirs(
        files: SandboxFiles, root: Path) -> None:
    files.mkdir("/d/sub", parents=True)
    await files.write("/d/file.txt", [b"abc"])
    (root / "d/link").symlink_to("sub")
    entries = {e["name"]: e for e in files.list("/d")}
    assert set(entries) == {"sub", "file.txt", "link"}
    assert entries["sub"]["isDir"] is True
    assert entries["link"]["isDir"] is False
    assert entries["file.txt"]["size"] == 3
    assert entries["file.txt"]["mode"] == "-rw-r--r--"
    assert entries["file.txt"]["mtime"].endswith("Z")


async def test_list_and_read_of_the_wrong_kind(files: SandboxFiles) -> None:
    await files.write("/f", [b"x"])
    with pytest.raises(ConflictError):
        files.list("/f")
    with pytest.raises(ConflictError):
        files.open_read("/home")
    with pytest.raises(NotFoundError):
        files.list("/missing")


async def test_stat(files: SandboxFiles, root: Path) -> None:
    missing = files.stat("/nope/deeper")
    assert missing["exists"] is False and missing["path"] == "/nope/deeper"
    await files.write("/f", [b"12345"])
    (root / "ln").symlink_to("/f")
    info = files.stat("/f")
    assert info["exists"] and info["size"] == 5 and not info["isDir"]
    assert info["modifiedAt"].endswith("Z")
    link = files.stat("/ln")
    assert link["isSymlink"] is True and link["symlinkTarget"] == "/f"
    assert files.stat("/")["isDir"] is True
    assert files.stat("/f/under-a-file")["exists"] is False


@pytest.mark.parametrize("target", ["/", "../../..", "../../../..", "/../../.."])
async def test_symlink_escapes_stay_inside_the_root(
        files: SandboxFiles, root: Path, canary: Path, target: str) -> None:
    (root / "home/user/esc").symlink_to(target)
    outside = canary.parent.name
    through = f"/home/user/esc/{outside}/canary.txt"
    host_path = f"/home/user/esc{canary}"  # the canary's absolute host path, via the link

    for path in (through, host_path):
        with pytest.raises(NotFoundError):
            files.open_read(path)
        assert files.stat(path)["exists"] is False
        await files.write(path, [b"pwned"])
        assert _read(files, path) == b"pwned"
        files.remove(path)
    with pytest.raises(NotFoundError):
        files.list(f"/home/user/esc/{outside}/..//{outside}/missing")
    listed = {e["name"] for e in files.list("/home/user/esc")}
    assert "home" in listed and outside in listed  # the root's own entries
    files.remove(f"/home/user/esc{canary.parent}", recursive=True)
    files.remove("/home/user/esc")  # the link itself, not what it points to

    assert canary.read_bytes() == CANARY
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]
    assert (root / "home/user").is_dir()


async def test_symlink_to_an_absolute_host_path_resolves_in_the_root(
        files: SandboxFiles, root: Path, canary: Path) -> None:
    (root / "link").symlink_to(canary)
    assert files.stat("/link")["symlinkTarget"] == str(canary)
    with pytest.raises(NotFoundError):
        files.open_read("/link")
    await files.write(f"{canary}", [b"inside"])
    assert _read(files, "/link") == b"inside"
    files.rename("/link", "/link2")  # renames the link, never its target
    files.remove("/link2")
    assert canary.read_bytes() == CANARY
    assert (root / canary.relative_to("/")).read_bytes() == b"inside"


async def test_dotdot_clamps_at_the_root(files: SandboxFiles, root: Path, canary: Path) -> None:
    assert files.normalize("../../../../etc/passwd") == "/etc/passwd"
    assert files.normalize("/../..") == "/"
    assert files.normalize("//x/./y/") == "/x/y"
    await files.write("../../../../x.txt", [b"x"])
    assert (root / "x.txt").read_bytes() == b"x"
    with pytest.raises(NotFoundError):
        files.open_read(f"/../../../..{canary}")


@pytest.mark.parametrize("path", ["", "a\0b", "/x" * 3000])
async def test_invalid_paths(files: SandboxFiles, path: str) -> None:
    with pytest.raises(ValidationError):
        files.stat(path)
    with pytest.raises(ValidationError):
        await files.write(path, [b"x"])


def test_root_itself_cannot_be_removed_or_renamed(files: SandboxFiles) -> None:
    with pytest.raises(ValidationError):
        files.remove("/", recursive=True)
    with pytest.raises(ValidationError):
        files.rename("/", "/x")


async def test_remove(files: SandboxFiles, root: Path) -> None:
    await files.write("/d/e/f.txt", [b"x"])
    with pytest.raises(ConflictError):
        files.remove("/d")
    files.remove("/d", recursive=True)
    assert not (root / "d").exists()
    with pytest.raises(NotFoundError):
        files.remove("/d")
    files.mkdir("/empty")
    files.remove("/empty")
    assert not (root / "empty").exists()


async def test_rename(files: SandboxFiles, root: Path) -> None:
    await files.write("/a.txt", [b"A"])
    files.mkdir("/dir")
    files.rename("/a.txt", "/dir/b.txt")
    assert (root / "dir/b.txt").read_bytes() == b"A"
    assert not (root / "a.txt").exists()
    with pytest.raises(NotFoundError):
        files.rename("/a.txt", "/c.txt")
    with pytest.raises(NotFoundError):
        files.rename("/dir/b.txt", "/missing/c.txt")
    await files.write("/dir2/x", [b"x"])
    with pytest.raises(ConflictError):
        files.rename("/dir", "/dir2")  # a non-empty directory is in the way


def test_mkdir(files: SandboxFiles, root: Path) -> None:
    with pytest.raises(NotFoundError):
        files.mkdir("/p/q/r")
    files.mkdir("/p/q/r", mode=0o700, parents=True)
    assert (root / "p/q/r").is_dir()
    assert (root / "p/q/r").stat().st_mode & 0o777 == 0o700
    files.mkdir("/p/q/r", parents=True)  # already there: fine with parents
    with pytest.raises(ConflictError):
        files.mkdir("/p/q/r")
    (root / "file").write_bytes(b"")
    with pytest.raises(ConflictError):
        files.mkdir("/file/sub", parents=True)


async def test_append_creates_then_extends_and_keeps_the_mode(
        files: SandboxFiles, root: Path) -> None:
    await files.append("notes/log.txt", [b"one\n"], mode=0o600)
    path = root / "home" / "user" / "notes" / "log.txt"
    assert path.read_bytes() == b"one\n" and (path.stat().st_mode & 0o777) == 0o600
    result = await files.append("notes/log.txt", [b"two\n", b"three\n"], mode=0o644)
    assert result == {"path": "/home/user/notes/log.txt", "size": 10}
    assert path.read_bytes() == b"one\ntwo\nthree\n"
    assert (path.stat().st_mode & 0o777) == 0o600


async def test_append_refuses_directories_and_fifos(files: SandboxFiles, root: Path) -> None:
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    with pytest.raises(ConflictError):
        await files.append("/dir", [b"x"])
    with pytest.raises(ConflictError):
        await files.append("/fifo", [b"x"])


async def test_append_through_a_symlink_stays_in_the_root(
        files: SandboxFiles, root: Path, canary: Path) -> None:
    (root / "escape").symlink_to(canary)
    with pytest.raises(NotFoundError):  # the link's directories do not exist in the root
        await files.append("/escape", [b"appended"])
    (root / canary.parent.relative_to("/")).mkdir(parents=True)
    await files.append("/escape", [b"appended"])
    assert canary.read_bytes() == CANARY
    assert (root / canary.relative_to("/")).read_bytes() == b"appended"


async def test_every_operation_runs_as_the_sandbox_identity(root: Path) -> None:
    depth = 0
    touched: list[int] = []

    @contextlib.contextmanager
    def identity() -> Iterator[None]:
        nonlocal depth
        depth += 1
        try:
            yield
        finally:
            depth -= 1

    real_open = os.open

    def watched_open(*args: object, **kwargs: object) -> int:
        if args[0] != root:  # the root itself is opened as the agent, before acting as the user
            touched.append(depth)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    files = SandboxFiles(root, identity=identity)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "open", watched_open)
        await files.write("/a/b.txt", [b"data"])
        await files.append("/a/b.txt", [b"more"])
        files.mkdir("/c", parents=True)
        files.rename("/a/b.txt", "/c/b.txt")
        files.stat("/c/b.txt")
        files.list("/c")
        files.open_read("/c/b.txt")[0].close()
        files.remove("/c", recursive=True)
    assert touched and all(level >= 1 for level in touched)


def test_recursive_remove_never_follows_or_opens_what_is_inside(
        files: SandboxFiles, root: Path, canary: Path) -> None:
    tree = root / "t" / "a" / "b"
    tree.mkdir(parents=True)
    (tree / "f").write_bytes(b"x")
    (tree / "to-host-dir").symlink_to(canary.parent)
    (tree / "to-host-file").symlink_to(canary)
    os.mkfifo(tree / "fifo")  # opening it would block: it must only be unlinked
    files.remove("/t", recursive=True)
    assert not (root / "t").exists()
    assert canary.read_bytes() == CANARY and canary.parent.is_dir()


def test_recursive_remove_of_a_tree_too_deep_is_a_conflict(files: SandboxFiles, root: Path) -> None:
    from qbox.agent.files import MAX_REMOVE_DEPTH

    deep = root / "deep"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:  # built with *at calls: the path would be too long for one string
        for _ in range(MAX_REMOVE_DEPTH + 1):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    with pytest.raises(ConflictError):
        files.remove("/deep", recursive=True)
    assert (root / "deep").is_dir()


def test_recursive_remove_of_a_directory_swapped_for_a_link_is_a_conflict(
        files: SandboxFiles, root: Path, canary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "race" / "d" / "sub").mkdir(parents=True)
    real_open = os.open

    def swapping_open(name: str, flags: int, *args: object, **kwargs: object) -> int:
        # Between the listing and the descent, the sandbox swaps "sub" for a link out.
        sub = root / "race" / "d" / "sub"
        if name == "sub" and not sub.is_symlink():
            sub.rmdir()
            sub.symlink_to(canary.parent)
        return real_open(name, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", swapping_open)
    with pytest.raises(ConflictError):
        files.remove("/race/d", recursive=True)
    assert canary.read_bytes() == CANARY and canary.parent.is_dir()


def test_stat_looks_again_when_a_link_turns_into_a_file(
        files: SandboxFiles, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "x").symlink_to("/elsewhere")
    real_readlink = os.readlink
    calls = 0

    def racing_readlink(name: str, *, dir_fd: int) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:  # swapped for a file between the lstat and the readlink
            (root / "x").unlink()
            (root / "x").write_bytes(b"now a file")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_readlink(name, dir_fd=dir_fd)

    monkeypatch.setattr(os, "readlink", racing_readlink)
    info = files.stat("/x")
    assert info["exists"] and not info["isSymlink"] and info["size"] == len(b"now a file")


def test_openat2_retries_eagain(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    from qbox.agent import openat2

    real = openat2._openat2_fn()
    failures = 3

    def flaky(*args: object) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return int(real(*args))

    monkeypatch.setattr(openat2, "_openat2_fn", lambda: flaky)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        opened = openat2.open_in_root(fd, "/home", os.O_PATH)
        os.close(opened)
        failures = 100  # a rename loop that never stops: EAGAIN, mapped to a conflict
        with pytest.raises(BlockingIOError):
            openat2.open_in_root(fd, "/home", os.O_PATH)
    finally:
        os.close(fd)


async def test_run_to_end_outlives_a_cancelled_caller() -> None:
    import asyncio
    import threading

    from qbox.agent.files import run_to_end

    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(5)
        finished.set()

    task = asyncio.ensure_future(run_to_end(work))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the thread, so the caller's cleanup has not run
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
