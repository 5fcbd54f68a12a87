"""Escapes through the files API: links, ``..`` chains and races planted by the sandbox.

The agent resolves every path with ``openat2(RESOLVE_IN_ROOT)`` inside the
sandbox's rootfs and acts as the sandbox user (agent/files.py). The traps are
the kinds the kernel's openat2 selftests plant (absolute links, ``..`` beyond
the root, loops, magic links), each tried with every operation; the races swap
a directory with links out of the root while the API is hammered below it.
The host canary is a directory outside every sandbox watched with inotify, so
an open that leaks nothing is caught as well as a read or a write.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import os
import random
import re
import secrets
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.qbox_process import QboxUp

pytestmark = pytest.mark.security

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


@pytest.fixture
def host_canary() -> Iterator[HostCanary]:
    canary = HostCanary()
    try:
        yield canary
    finally:
        canary.close()


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
    """The distinct exceptions in the qbox log after offset ``since`` (its tracebacks end with one)."""
    return sorted({line for line in up.log()[since:].splitlines()
                   if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line)})


def host_has(name: str, *dirs: Path) -> list[Path]:
    return [d / name for d in dirs if (d / name).exists() or (d / name).is_symlink()]


# --- symlink and path traps ---------------------------------------------------------------------


def test_absolute_symlinks_resolve_in_the_sandbox(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    token = secrets.token_hex(4)
    marker = f"/etc/qbox-marker-{token}"
    box.sh(f"echo inside-{token} > {marker}", user="root")
    out = box.sh(f"cd /home/user && ln -s /etc etc-link && ln -s {canary.dir} canary-link && "
                 f"ln -s {canary.file} secret-link && ln -s {canary.file} secret-link2 && "
                 f"ln -s /home/user/made-by-append dangling && echo ok")
    assert out["stdout"] == "ok\n", out

    # /etc is the sandbox's.
    assert expect(files.read(f"/home/user/etc-link/qbox-marker-{token}"), 200, canary).text == f"inside-{token}\n"
    names = [e["name"] for e in expect(files.list("/home/user/etc-link"), 200, canary).json()]
    assert f"qbox-marker-{token}" in names
    expect(files.write(f"/home/user/etc-link/new-{token}"), 403, canary, "forbidden")
    expect(files.mkdir(f"/home/user/etc-link/dir-{token}"), 403, canary, "forbidden")
    expect(files.rename(f"/home/user/etc-link/qbox-marker-{token}", "/home/user/stolen"), 403, canary)
    expect(files.delete(f"/home/user/etc-link/qbox-marker-{token}"), 403, canary, "forbidden")
    # The sandbox's root writes the sandbox's /etc, never the host's.
    expect(files.write(f"/home/user/etc-link/new-{token}", b"root", user="root"), 204, canary)
    assert box.sh(f"cat /etc/new-{token}")["stdout"] == "root"
    assert not host_has(f"new-{token}", Path("/etc"))

    # Links to the host canary name a path that does not exist in the sandbox.
    for user in (None, "root"):
        missing_for_every_operation(files, "/home/user/canary-link/secret", canary, user)
        expect(files.read("/home/user/secret-link", user), 404, canary, "not_found")
        expect(files.list("/home/user/canary-link", user), 404, canary, "not_found")
        expect(files.write("/home/user/secret-link2", b"pwned", user, append="true"), 404, canary)
    stat = expect(files.stat("/home/user/secret-link"), 200, canary).json()
    assert stat["isSymlink"] is True and stat["symlinkTarget"] == str(canary.file), stat

    # A dangling link as the target of a write: replaced by the new file (atomically), in place;
    # appending follows it, inside the root.
    expect(files.write("/home/user/secret-link", b"replaced"), 204, canary)
    out = box.sh("test -f /home/user/secret-link && ! test -L /home/user/secret-link && cat /home/user/secret-link")
    assert out["stdout"] == "replaced", out
    expect(files.write("/home/user/dangling", b"appended", append="true"), 204, canary)
    out = box.sh("test -L /home/user/dangling && cat /home/user/made-by-append")
    assert out["stdout"] == "appended", out

    # Removing or renaming a link acts on the link.
    expect(files.rename("/home/user/canary-link", "/home/user/canary-link-moved"), 204, canary)
    expect(files.delete("/home/user/canary-link-moved", recursive=True), 204, canary)
    expect(files.delete("/home/user/etc-link", user="root", recursive=True), 204, canary)
    assert box.sh(f"cat {marker}")["stdout"] == f"inside-{token}\n"
    canary.assert_untouched()


def test_dotdot_chains_clamp_at_the_sandbox_root(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    token = secrets.token_hex(4)
    box.sh(f"echo inside-{token} > /etc/qbox-marker", user="root")
    up = "/".join([".."] * 16)
    # On the host, rootfs/home/user/../../../disk.img is the sandbox's disk image and
    # rootfs/home/user/../../.. the sandbox's directory.
    out = box.sh(f"cd /home/user && ln -s {up} up && ln -s {up}{canary.dir} upc && ln -s ../../../disk.img disk "
                 "&& ln -s ../../.. three && echo ok")
    assert out["stdout"] == "ok\n", out

    # Every way of climbing out names the sandbox's own /tmp/qbox-canary-…/secret: missing there.
    climbs = [f"/../../../../../..{canary.file}", f"../../../../../../../..{canary.file}",
              f"/home/user/up{canary.file}", "/home/user/upc/secret", f"/home/user/three{canary.file}"]
    for path in climbs:
        for user in (None, "root"):
            expect(files.read(path, user), 404, canary, "not_found")
            expect(files.list(path.rsplit("/", 1)[0], user), 404, canary, "not_found")
            assert expect(files.stat(path, user), 200, canary).json()["exists"] is False
            expect(files.rename(path, "/home/user/stolen", user), 404, canary, "not_found")
            expect(files.delete(path, user, recursive=True), 404, canary, "not_found")
    # Creating it creates it in the sandbox, where every other climb then finds it.
    expect(files.write(climbs[0], b"inside"), 204, canary)
    assert box.sh(f"cat {canary.file}")["stdout"] == "inside"
    for path in climbs:
        assert expect(files.read(path, "root"), 200, canary).text == "inside"
    expect(files.write(climbs[2], b"again", append="true"), 204, canary)
    expect(files.mkdir(climbs[3] + "-dir"), 204, canary)
    expect(files.rename(climbs[3] + "-dir", climbs[1] + "-moved"), 204, canary)
    assert box.sh(f"test -d {canary.file}-moved && cat {canary.file}")["stdout"] == "insideagain"
    expect(files.delete(climbs[4]), 204, canary)
    assert box.sh(f"test -e {canary.file} || echo gone")["stdout"] == "gone\n"

    for path in ("/../../etc/qbox-marker", "../../../../../etc/qbox-marker", "/home/user/up/etc/qbox-marker",
                 "/home/user/three/etc/qbox-marker"):
        assert expect(files.read(path), 200, canary).text == f"inside-{token}\n"
    expect(files.read("/home/user/disk"), 404, canary, "not_found")
    expect(files.read("/home/user/three/config.json"), 404, canary, "not_found")
    for path in ("/home/user/up", "/home/user/three"):
        names = {e["name"] for e in expect(files.list(path), 200, canary).json()}
        assert {"etc", "home", "proc"} <= names and not names & {"disk.img", "rootfs", "config.json"}, names
    expect(files.write("/home/user/up/qbox-top", b"x"), 403, canary, "forbidden")
    canary.assert_untouched()


def test_symlink_loops_are_validation_errors(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    # 45 links in a row: more than the 40 the kernel (and gVisor) follow.
    out = box.sh("cd /home/user && ln -s loop2 loop1 && ln -s loop1 loop2 && ln -s self self && "
                 "for i in $(seq 0 44); do ln -s chain$((i + 1)) chain$i; done && mkdir chain45 && echo ok")
    assert out["stdout"] == "ok\n", out

    for path in ("/home/user/loop1", "/home/user/self", "/home/user/chain0"):
        for user in (None, "root"):
            expect(files.read(path, user), 400, canary, "validation_error")
            expect(files.list(path, user), 400, canary, "validation_error")
            expect(files.write(path, b"x", user, append="true"), 400, canary, "validation_error")
            stat = expect(files.stat(path, user), 200, canary).json()  # the link itself
            assert stat["exists"] and stat["isSymlink"], stat
            inner = path + "/x"
            expect(files.read(inner, user), 400, canary, "validation_error")
            expect(files.stat(inner, user), 400, canary, "validation_error")
            expect(files.write(inner, b"x", user), 400, canary, "validation_error")
            expect(files.list(inner, user), 400, canary, "validation_error")
            expect(files.mkdir(inner, user), 400, canary, "validation_error")
            expect(files.mkdir(inner, user, parents=False), 400, canary, "validation_error")
            expect(files.rename(inner, "/home/user/y", user), 400, canary, "validation_error")
            expect(files.rename("/home/user/.bashrc", inner, user), 400, canary, "validation_error")
            expect(files.delete(inner, user), 400, canary, "validation_error")
    # A chain of 35 resolves.
    assert expect(files.list("/home/user/chain10"), 200, canary).json() == []
    # The loop itself is a name like any other: replaced by a write, removed by a delete.
    expect(files.write("/home/user/loop1", b"plain"), 204, canary)
    assert expect(files.read("/home/user/loop1"), 200, canary).text == "plain"
    expect(files.delete("/home/user/self"), 204, canary)
    canary.assert_untouched()


def test_proc_magic_links_never_reach_the_host(make_box: Any, host_canary: HostCanary,
                                               qbox_sec: QboxUp) -> None:
    """The agent sees the rootfs, whose /proc is an empty directory (procfs is mounted over it
    only inside the sandbox): magic links there are missing, never the host's."""
    canary = host_canary
    box = make_box()
    files = Files(box)
    out = box.sh("cd /home/user && ln -s /proc/self/root magic && ln -s /proc/1/root one && echo ok")
    assert out["stdout"] == "ok\n", out
    paths = [f"/proc/self/root{canary.file}", f"/proc/1/root{canary.file}", f"/proc/thread-self/root{canary.file}",
             f"/home/user/magic{canary.file}", f"/home/user/one{canary.dir}", "/proc/self/exe",
             "/proc/self/cwd/x", "/proc/self/fd/0", "/proc/1/environ"]
    for path in paths:
        expect(files.read(path), 404, canary, "not_found")
        expect(files.read(path, "root"), 404, canary, "not_found")
        expect(files.list(path), 404, canary, "not_found")
        assert expect(files.stat(path), 200, canary).json()["exists"] is False
        expect(files.rename(path, "/home/user/stolen"), 404, canary, "not_found")
        expect(files.delete(path, recursive=True), 404, canary, "not_found")
        # Writes need /proc/self (or /home/user/magic's target) to be created: the user may not.
        expect(files.write(path), 403 if path.startswith("/proc/") else 404, canary)
        expect(files.mkdir(path), 403 if path.startswith("/proc/") else 404, canary)
    for path in ("/home/user/magic", "/home/user/one"):
        expect(files.list(path), 404, canary, "not_found")
    # The sandbox's root may create them: in the rootfs's own /proc directory, nowhere else.
    expect(files.write(f"/proc/self/root{canary.file}", b"pwned", "root"), 204, canary)
    rootfs = qbox_sec.data_dir / "sandboxes" / box.id / "rootfs"
    assert (rootfs / f"proc/self/root{canary.file}").read_bytes() == b"pwned"
    canary.assert_untouched()


def test_links_to_the_host_path_of_the_sandbox_rootfs(make_box: Any, host_canary: HostCanary,
                                                      qbox_sec: QboxUp) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    sandbox_dir = qbox_sec.data_dir / "sandboxes" / box.id
    assert (sandbox_dir / "rootfs/etc").is_dir()
    out = box.sh(f"cd /home/user && ln -s {sandbox_dir}/rootfs hostroot && ln -s {sandbox_dir} hostdir && "
                 f"ln -s {sandbox_dir}/disk.img hostdisk && echo ok")
    assert out["stdout"] == "ok\n", out
    for path in ("/home/user/hostroot/etc/passwd", "/home/user/hostdir/disk.img", "/home/user/hostdir/config.json"):
        for user in (None, "root"):
            missing_for_every_operation(files, path, canary, user)
    # Named directly, the host path is a path in the sandbox (missing there until created).
    expect(files.read(f"{sandbox_dir}/rootfs/etc/passwd"), 404, canary, "not_found")
    expect(files.read(f"{sandbox_dir}/disk.img", "root"), 404, canary, "not_found")
    expect(files.read("/home/user/hostdisk"), 404, canary, "not_found")
    expect(files.list("/home/user/hostroot"), 404, canary, "not_found")
    # Host-side: nothing was created next to the sandbox's directories.
    assert not [p.name for p in sandbox_dir.iterdir() if "renamed" in p.name or p.name == "sub"]
    canary.assert_untouched()


def test_hard_links_stay_the_same_file(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    out = box.sh("cd /home/user && echo original > f && ln f hl && echo ok")
    assert out["stdout"] == "ok\n", out
    assert expect(files.read("/home/user/hl"), 200, canary).text == "original\n"
    assert expect(files.stat("/home/user/hl"), 200, canary).json()["size"] == len("original\n")
    # The atomic replace gives the name a new file; the other name keeps the old one.
    expect(files.write("/home/user/hl", b"new"), 204, canary)
    assert box.sh("cat /home/user/f; cat /home/user/hl")["stdout"] == "original\nnew"
    # Appending writes the shared file.
    box.sh("rm /home/user/hl && ln /home/user/f /home/user/hl")
    expect(files.write("/home/user/hl", b"more\n", append="true"), 204, canary)
    assert box.sh("cat /home/user/f")["stdout"] == "original\nmore\n"
    expect(files.delete("/home/user/hl"), 204, canary)
    assert box.sh("cat /home/user/f")["stdout"] == "original\nmore\n"
    canary.assert_untouched()


# --- races --------------------------------------------------------------------------------------

# Runs in the sandbox: swaps each name with its ".x" twin (a link or a FIFO) as fast as it can,
# with renameat2(RENAME_EXCHANGE) where the kernel has it (gVisor's does not: three renames).
SWAPPER = r"""
import ctypes, errno, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
NR = {"x86_64": 316, "aarch64": 276}[os.uname().machine]
base, seconds, decoy_rel, decoy = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
pairs = [arg.split("=", 1) for arg in sys.argv[5:]]
os.makedirs(base + "/keep", exist_ok=True)
os.chdir(base)
if not os.path.exists("keep/fifo"):
    os.mkfifo("keep/fifo")
try:  # gVisor's gofer cannot link a FIFO: without that the test could not free a blocked reader
    os.link("keep/fifo", "keep/probe")
    os.unlink("keep/probe")
except OSError:
    pairs = [(name, kind) for name, kind in pairs if kind != "FIFO"]
    print("no FIFO: it cannot be linked here", flush=True)

def fill(name):
    os.makedirs(f"{name}/etc", exist_ok=True)
    os.makedirs(os.path.dirname(f"{name}/{decoy_rel}"), exist_ok=True)
    for path in (f"{name}/{decoy_rel}", f"{name}/secret"):
        with open(path, "w") as f:
            f.write(decoy)

def real_dir(path):
    return os.path.isdir(path) and not os.path.islink(path)

def make(name, kind):
    if kind == "DIR":
        fill(name)
    elif kind == "FIFO":
        os.link("keep/fifo", name)  # one FIFO, so the test can release whoever blocks on it
    else:
        os.symlink(kind, name)

def repair(name, kind):
    # One of the pair is the directory, the other the link (or FIFO); the API may remove either.
    a, b = name, name + ".x"
    if os.path.lexists("t"):
        os.rename("t", b if os.path.lexists(a) else a)
    if real_dir(a) and real_dir(b):
        os.rename(b, "junk"); os.system("rm -rf junk")
    for one, other in ((a, b), (b, a)):
        if not os.path.lexists(one):
            make(one, "DIR" if not real_dir(other) else kind)
    for real in (a, b):
        if real_dir(real) and not os.path.exists(f"{real}/{decoy_rel}"):
            fill(real)

for name, kind in pairs:
    repair(name, kind)
atomic, swaps, end, last = True, 0, time.monotonic() + seconds, 0.0
while (now := time.monotonic()) < end:
    for name, kind in pairs:
        a, b = name.encode(), (name + ".x").encode()
        try:
            if atomic:
                if libc.syscall(NR, -100, a, -100, b, 2) == 0:
                    swaps += 1
                    continue
                if ctypes.get_errno() == errno.EINVAL:
                    atomic = False
            else:
                os.rename(a, b"t"); os.rename(b, a); os.rename(b"t", b)
                swaps += 1
                continue
        except OSError:
            pass
        try:
            repair(name, kind)
        except OSError:
            pass
    if now - last > 0.1:
        for name, kind in pairs:
            try:
                repair(name, kind)
            except OSError:
                pass
        print("swaps", swaps, "atomic" if atomic else "renames", flush=True)
        last = now
print("swaps", swaps, "atomic" if atomic else "renames", "done", flush=True)
"""

RACE_DIR = "/home/user/race"

class Swapper:
    """The swapper running in the sandbox of ``files`` as a background command."""

    def __init__(self, files: Files, seconds: float, decoy_rel: str, decoy: str, pairs: dict[str, str]) -> None:
        self.files = files
        args = ["-c", SWAPPER, RACE_DIR, str(seconds), decoy_rel, decoy, *(f"{k}={v}" for k, v in pairs.items())]
        r = files.send("POST", "/commands", json={"cmd": "python3", "args": args})
        assert r.status_code == 201, r.text
        self.pid = r.json()["pid"]
        deadline = time.monotonic() + 15
        while self.swaps() == 0:  # running, and swapping
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.1)

    def logs(self) -> dict[str, Any]:
        return self.files.send("GET", f"/commands/{self.pid}/logs").json()  # type: ignore[no-any-return]

    def swaps(self) -> int:
        counts = re.findall(r"swaps (\d+)", self.logs().get("stdout", ""))
        return int(counts[-1]) if counts else 0

    def kill(self) -> None:
        self.files.send("DELETE", f"/commands/{self.pid}", params={"signal": 9})


def hammer(attack: Any, seconds: float, workers: int = 8) -> list[tuple[str, str, Any, str]]:
    """Run ``attack(rng)`` from ``workers`` threads for ``seconds``; the (op, path, status, body) it returns."""
    deadline = time.monotonic() + seconds

    def worker(seed: int) -> list[tuple[str, str, Any, str]]:
        rng, out = random.Random(seed), []
        while time.monotonic() < deadline:
            out.append(attack(rng))
        return out

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return [r for chunk in pool.map(worker, range(workers)) for r in chunk]


def test_race_directory_swapped_with_links_out_of_the_root(make_box: Any, host_canary: HostCanary,
                                                           qbox_sec: QboxUp) -> None:
    canary = host_canary
    box = make_box()
    # Generous: a request the client gives up on is a cancelled one on the server, which
    # is not what this test is about.
    files = Files(box, timeout=60)
    token = secrets.token_hex(6)
    decoy = f"decoy-{token}"
    decoy_rel = str(canary.file).lstrip("/")  # tmp/qbox-canary-…/secret, as inside the sandbox
    # Where each link lands when resolved in the root: the decoy is there too.
    box.sh(f"mkdir -p {canary.dir} && printf {decoy} > {canary.file}")
    links = {"root": "/", "up4": "../../../..", "up16": "/".join([".."] * 16), "host": str(canary.dir)}

    def attack(rng: random.Random) -> tuple[str, str, Any, str]:
        name = rng.choice(list(links))
        user = rng.choice([None, "root"])
        below = f"{RACE_DIR}/{name}"
        secret = below + (f"/{canary.file.name}" if name == "host" else str(canary.file))
        folder = secret.rsplit("/", 1)[0]
        op = rng.choice(["read", "write", "write-etc", "append", "stat", "list", "mkdir", "rename", "delete",
                         "stat-name", "list-name"])
        escape = f"qbox-escape-{token}-{rng.randrange(1000)}"
        try:
            r = {
                "read": lambda: files.read(secret, user),
                "write": lambda: files.write(secret, decoy.encode(), user),
                "write-etc": lambda: files.write(f"{below}/etc/{escape}", b"pwned", user),
                "append": lambda: files.write(f"{folder}/{escape}", b"pwned", user, append="true"),
                "stat": lambda: files.stat(secret, user),
                "list": lambda: files.list(folder, user),
                "mkdir": lambda: files.mkdir(f"{folder}/{escape}", user),
                "rename": lambda: files.rename(secret, f"{folder}/{escape}", user),
                "delete": lambda: files.delete(f"{folder}/{escape}", user, recursive=True),
                "stat-name": lambda: files.stat(below, user),
                "list-name": lambda: files.list(below, user),
            }[op]()
        except httpx.TimeoutException:
            return op, secret, "timeout", ""
        return op, secret, r.status_code, r.text

    swapper = Swapper(files, seconds=30, decoy_rel=decoy_rel, decoy=decoy, pairs=links)
    log_offset = len(qbox_sec.log())
    try:
        results = hammer(attack, seconds=4)
        swaps = swapper.swaps()
    finally:
        swapper.kill()
        files.wait_for_the_rate_limit()

    # Security first: nothing read, nothing changed, nothing created outside the root.
    for op, _path, status, body in results:
        assert canary.secret not in body and canary.only_here not in body, (op, status, body[:200])
        if op == "read" and status == 200:
            assert body == decoy
    canary.assert_untouched()
    sandbox_dir = qbox_sec.data_dir / "sandboxes" / box.id
    host_dirs = [Path("/"), Path("/etc"), Path("/tmp"), Path("/root"), canary.dir, sandbox_dir,
                 sandbox_dir.parent, qbox_sec.data_dir, qbox_sec.data_dir.parent]
    leaked = [p for d in host_dirs for p in d.glob(f"qbox-escape-{token}-*")]
    assert not leaked, leaked
    # The race was run: many swaps, many requests, many served, reads that reached the decoy.
    assert swaps > 100, swaps
    assert len(results) > 200, len(results)
    assert any(op == "read" and status == 200 for op, _, status, _ in results)
    assert sum(1 for _, _, status, _ in results if status in (200, 204)) > 50

    # Then the answers: each an error of the caller's kind, never a timeout or an internal error.
    allowed = {"read": {200, 404, 409}, "stat": {200}, "stat-name": {200}, "list": {200, 404, 409},
               "list-name": {200, 404, 409}}
    default = {204, 403, 404, 409}
    unexplained = {(op, status, body[:200]) for op, _path, status, body in results
                   if status not in allowed.get(op, default)}
    errors = server_errors(qbox_sec, log_offset)
    assert not unexplained and not errors, "\n".join(map(str, [*sorted(unexplained, key=str), *errors]))


def _release_fifo_readers(fifo: Path) -> int:
    """Open the FIFO for writing while someone waits to read it: that lets them go."""
    released = 0
    for _ in range(100):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return released
            raise
        os.close(fd)
        released += 1
        time.sleep(0.05)
    return released


def test_race_recursive_delete_of_a_swapped_name(make_box: Any, host_canary: HostCanary,
                                                 qbox_sec: QboxUp) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box, timeout=8)
    token = secrets.token_hex(6)
    decoy_rel = str(canary.file).lstrip("/")

    def attack(rng: random.Random) -> tuple[str, str, Any, str]:
        path = f"{RACE_DIR}/{rng.choice(['host', 'fifo'])}"
        try:
            r = files.delete(path, rng.choice([None, "root"]), recursive=True)
        except httpx.TimeoutException:
            return "delete", path, "timeout", ""
        return "delete", path, r.status_code, r.text

    swapper = Swapper(files, seconds=30, decoy_rel=decoy_rel, decoy=f"decoy-{token}",
                      pairs={"host": str(canary.dir), "fifo": "FIFO"})
    fifo = qbox_sec.data_dir / "sandboxes" / box.id / f"rootfs{RACE_DIR}/keep/fifo"
    try:
        results = hammer(attack, seconds=3, workers=6)
    finally:
        swapper.kill()
        files.wait_for_the_rate_limit()
        # Blocked agent threads would otherwise hold the rootfs busy for good.
        blocked = _release_fifo_readers(fifo)
    assert len(results) > 50, len(results)
    canary.assert_untouched()  # the agent never opened the host directory the link names
    assert blocked == 0, f"{blocked} agent threads were stuck opening the sandbox's FIFO"
    unexpected = sorted({(status, body[:120]) for _, _, status, body in results if status not in (204, 404, 409)},
                        key=str)
    assert not unexpected, unexpected
