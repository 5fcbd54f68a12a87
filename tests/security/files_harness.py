"""The files escape suites' tools: an inotify-watched host canary, a files API client,
and the checks every trap repeats."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.qbox_process import QboxUp


_IN_ALL_EVENTS = 0xFFF  # open, access, modify, attrib, close, move, create, delete
_IN_NONBLOCK = os.O_NONBLOCK


class HostCanary:
    """A host directory with a secret in it, outside every sandbox, watched with inotify."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qbox-canary-", dir="/tmp"))
        self.file = self.dir / "secret"
        self.secret = "canary-" + secrets.token_hex(12)
        self.only_here = "host-only-" + secrets.token_hex(6)
        self.file.write_text(self.secret)
        (self.dir / self.only_here).write_text("")
        past = time.time() - 86400
        for path in (self.file, self.dir):
            os.utime(path, (past, past))
        self._before = self._snapshot()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(_IN_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        for path in (self.dir, self.file):
            assert self._libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_ALL_EVENTS) >= 0

    def _snapshot(self) -> tuple[Any, ...]:
        # stat only: reading the file or listing the directory would show up in inotify.
        file, folder = self.file.stat(), self.dir.stat()
        return (file.st_ino, file.st_size, file.st_mtime_ns, file.st_ctime_ns, folder.st_mtime_ns,
                folder.st_nlink)

    def _events(self) -> list[str]:
        events, data = [], b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._fd, 65536):
                data += chunk
        while data:
            _wd, mask, _cookie, size = struct.unpack_from("iIII", data)
            name = data[16:16 + size].rstrip(b"\0").decode(errors="replace")
            events.append(f"{mask:#x} {name or '.'}")
            data = data[16 + size:]
        return events

    def check(self, *texts: str) -> None:
        """Nothing on the host opened or changed the canary, and ``texts`` hold none of it."""
        events = self._events()
        assert not events, f"something on the host opened or changed the canary: {events}"
        assert self._snapshot() == self._before
        for text in texts:
            assert self.secret not in text and self.only_here not in text

    def assert_untouched(self) -> None:
        """``check``, then a look at the content itself (which the watch then sees: call it last)."""
        self.check()
        assert self.file.read_text() == self.secret
        assert sorted(os.listdir(self.dir)) == sorted(["secret", self.only_here])
        self._events()

    def close(self) -> None:
        os.close(self._fd)
        shutil.rmtree(self.dir, ignore_errors=True)




class Files:
    """The files API of one sandbox; each call returns the raw response."""

    def __init__(self, box: Any, timeout: float = 30) -> None:
        self.api, self.base, self.timeout = box.api, f"/v1/sandboxes/{box.id}", timeout
        self.throttled = 0

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # The races outrun the per-key request rate: a 429 is waited out, not an answer.
        while True:
            r = self.api.request(method, self.base + url, timeout=self.timeout, **kwargs)
            if r.status_code != 429:
                return r
            self.throttled += 1
            time.sleep(float(r.json()["error"]["details"].get("retryAfterSeconds", 1)))

    @staticmethod
    def _params(path: str, user: str | None, **extra: Any) -> dict[str, Any]:
        return {"path": path, **({"user": user} if user else {}), **extra}

    def read(self, path: str, user: str | None = None) -> httpx.Response:
        return self.send("GET", "/download", params=self._params(path, user))

    def write(self, path: str, data: bytes = b"x", user: str | None = None, **extra: Any) -> httpx.Response:
        return self.send("PUT", "/file", params=self._params(path, user, mode="644", **extra), content=data)

    def stat(self, path: str, user: str | None = None) -> httpx.Response:
        return self.send("GET", "/stat", params=self._params(path, user))

    def list(self, path: str, user: str | None = None) -> httpx.Response:
        return self.send("GET", "/files", params=self._params(path, user))

    def mkdir(self, path: str, user: str | None = None, parents: bool = True) -> httpx.Response:
        body = {"path": path, "mode": 0o755, "parents": parents, **({"user": user} if user else {})}
        return self.send("POST", "/files/mkdir", json=body)

    def rename(self, src: str, dst: str, user: str | None = None) -> httpx.Response:
        body = {"src": src, "dst": dst, **({"user": user} if user else {})}
        return self.send("POST", "/files/rename", json=body)

    def delete(self, path: str, user: str | None = None, recursive: bool = False) -> httpx.Response:
        extra = {"recursive": "true"} if recursive else {}
        return self.send("DELETE", "/file", params=self._params(path, user, **extra))

    def wait_for_the_rate_limit(self) -> None:
        """Let the key's request bucket fill again before the next test uses it."""
        if self.throttled:
            time.sleep(2)


def expect(response: httpx.Response, status: int, canary: HostCanary, code: str | None = None) -> httpx.Response:
    request = f"{response.request.method} {response.request.url.path}?{response.request.url.query.decode()}"
    assert response.status_code == status, f"{request}: {response.status_code} {response.text[:300]}"
    if code:
        assert response.json()["error"]["code"] == code, f"{request}: {response.text[:300]}"
    canary.check(response.text)
    return response


def missing_for_every_operation(files: Files, path: str, canary: HostCanary, user: str | None = None) -> None:
    """Read, write, append, list, mkdir, rename (both ways) and delete of ``path`` are 404; stat says missing."""
    expect(files.read(path, user), 404, canary, "not_found")
    expect(files.write(path, b"pwned", user), 404, canary, "not_found")
    expect(files.write(path, b"pwned", user, append="true"), 404, canary, "not_found")
    expect(files.list(path, user), 404, canary, "not_found")
    expect(files.mkdir(path + "/sub", user), 404, canary, "not_found")
    expect(files.rename(path, "/home/user/renamed-" + secrets.token_hex(3), user), 404, canary, "not_found")
    expect(files.rename("/home/user/missing-source", path, user), 404, canary, "not_found")
    expect(files.delete(path, user, recursive=True), 404, canary, "not_found")
    stat = expect(files.stat(path, user), 200, canary).json()
    assert stat["exists"] is False, stat


def server_errors(up: QboxUp, since: int = 0) -> list[str]:
    """The distinct exceptions in the qbox log after offset ``since``, each with its traceback.

    The whole traceback, not only its last line, so a failure on CI says where it came from.
    """
    lines = up.log()[since:].splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line) and line not in found:
            # Its traceback, or what introduced it ("Exception ignored in: …"), or some context.
            start = next((j for j in range(i, max(i - 60, -1), -1)
                          if lines[j].startswith(("Traceback", "Exception ignored"))), i - 5)
            found[line] = "\n".join(lines[max(start - 1, 0):i + 1])
    return [found[k] for k in sorted(found)]


def host_has(name: str, *dirs: Path) -> list[Path]:
    return [d / name for d in dirs if (d / name).exists() or (d / name).is_symlink()]
