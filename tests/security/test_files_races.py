"""Races through the files API: a process in the sandbox swaps a directory with links out
of the root while the API is hammered below it (see test_files_escape.py for the traps)."""

from __future__ import annotations

import concurrent.futures
import errno
import os
import random
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.qbox_process import QboxUp

from tests.security.files_harness import Files, HostCanary, server_errors

pytestmark = pytest.mark.security


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


def hammer(attack: Any, seconds: float, at_least: int, workers: int = 8,
           give_up_after: float = 50.0,
           raced_enough: Any = lambda: True) -> list[tuple[str, str, Any, str]]:
    """Run ``attack(rng)`` from ``workers`` threads; the (op, path, status, body) it returns.

    It runs for ``seconds`` and then on until ``at_least`` requests were answered and
    ``raced_enough()`` (asked at most twice a second) says the other side of the race did
    its part, so a slow, loaded machine still runs the whole race; ``give_up_after`` bounds
    it (the swapper runs 60 s).
    """
    started = time.monotonic()
    done = [0]
    lock = threading.Lock()
    raced = {"ok": False, "asked": 0.0}

    def more() -> bool:
        elapsed = time.monotonic() - started
        with lock:
            if elapsed < seconds:
                return True
            if not raced["ok"] and elapsed - raced["asked"] >= 0.5:
                raced["asked"] = elapsed
                raced["ok"] = bool(raced_enough())
            return (done[0] < at_least or not raced["ok"]) and elapsed < give_up_after

    def worker(seed: int) -> list[tuple[str, str, Any, str]]:
        rng, out = random.Random(seed), []
        while more():
            out.append(attack(rng))
            with lock:
                done[0] += 1
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

    # Under gVisor on a loaded 2-core machine the swapper has managed < 5 swaps a second
    # against eight hammering clients: it runs long enough for the race to be run anyway.
    swapper = Swapper(files, seconds=60, decoy_rel=decoy_rel, decoy=decoy, pairs=links)
    log_offset = len(qbox_sec.log())
    try:
        results = hammer(attack, seconds=4, at_least=400, raced_enough=lambda: swapper.swaps() > 100)
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
        results = hammer(attack, seconds=3, at_least=100, workers=6, give_up_after=20.0)
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
