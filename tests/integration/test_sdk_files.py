"""Our SDK's `sb.files` (sync and async) against a real `qbox up`."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from qbox import (
    AsyncSandbox,
    ConflictError,
    FileEncodingError,
    NotFoundError,
    PermissionDeniedError,
    Sandbox,
)
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration


def test_sync_files_round_trip(qbox: QboxUp, tmp_path: Path) -> None:
    with Sandbox.create("tpl_python", timeout=120, api_key=qbox.api_key,
                        base_url=qbox.base_url) as sb:
        f = sb.files
        f.write("app/main.py", "print('hi')\n")
        assert sb.commands.run("python3 app/main.py").stdout == "hi\n"
        f.write("/home/user/blob", io.BytesIO(b"\xff\x00" * 1000), mode=0o600)
        with pytest.raises(FileEncodingError):
            f.read("/home/user/blob")
        assert f.read("/home/user/blob", format="bytes") == b"\xff\x00" * 1000
        f.append("app/log.txt", "a\n")
        f.append("app/log.txt", b"b\n")
        assert f.read("app/log.txt") == "a\nb\n"
        stat = f.stat("/home/user/blob")
        assert (stat.exists, stat.size, stat.mode) == (True, 2000, "-rw-------")
        assert f.exists("nope") is False
        f.mkdir("app/pkg/sub")
        sb.commands.run("ln -s /home/user/app /home/user/app/pkg/back")
        paths = {e.path: e.is_dir for e in f.list("/home/user/app", depth=None)}
        assert paths == {"/home/user/app/main.py": False, "/home/user/app/log.txt": False,
                         "/home/user/app/pkg": True, "/home/user/app/pkg/sub": True,
                         "/home/user/app/pkg/back": False}
        f.rename("app/main.py", "app/pkg/main.py")
        with pytest.raises(ConflictError):
            f.remove("app")
        with pytest.raises(PermissionDeniedError):
            f.write("/etc/motd", "mine now")
        with pytest.raises(NotFoundError):
            f.read("/no/such/file")

        local = tmp_path / "payload.bin"
        local.write_bytes(os.urandom(8 * 1024 * 1024 + 3))
        progress: list[tuple[int, int | None]] = []
        f.upload(local, "/tmp/payload.bin", on_progress=lambda done, total: progress.append((done, total)))
        assert progress[-1] == (local.stat().st_size, local.stat().st_size) and len(progress) > 2
        back = tmp_path / "back.bin"
        f.download("/tmp/payload.bin", back)
        assert back.read_bytes() == local.read_bytes()
        with f.read("/tmp/payload.bin", format="stream") as chunks:
            assert sum(len(c) for c in chunks) == local.stat().st_size
        f.remove("app", recursive=True)
        assert not f.exists("app")


def test_async_files(qbox: QboxUp) -> None:
    async def main() -> None:
        sb = await AsyncSandbox.create("tpl_python", timeout=120, api_key=qbox.api_key,
                                       base_url=qbox.base_url)
        try:
            await sb.files.write("/tmp/async/a.txt", "async\n")
            assert await sb.files.read("/tmp/async/a.txt") == "async\n"
            stream = await sb.files.read("/tmp/async/a.txt", format="stream")
            got = b"".join([chunk async for chunk in stream])
            assert got == b"async\n"
            # A folder of its own: /tmp also holds what the sandbox itself puts there (its
            # code interpreter's files, once that has started).
            assert [e.name for e in await sb.files.list("/tmp/async")] == ["a.txt"]
        finally:
            await sb.kill()

    asyncio.run(main())
