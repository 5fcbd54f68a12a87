"""Run a real ``qbox up`` for integration and compatibility tests, and clean up after it.

Cleanup does not trust the code under test: after stopping qbox it removes
whatever containers, overlay mounts and cgroups are left under its data dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from qbox.agent.host_names import HostNames
from tests.agent_names import kill_and_remove, scrub_names

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class QboxUp:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    api_key: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60,
                            headers={"Authorization": f"Bearer {key or self.api_key}"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start(data_dir: Path, port: int | None = None, timeout: float = 600,
          env: dict[str, str] | None = None) -> QboxUp:
    """``qbox up`` on ``data_dir``; ``env`` is added to this process's environment for it."""
    if os.geteuid() != 0:
        raise RuntimeError("integration tests run sandboxes with crun and need root")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir.parent / f"{data_dir.name}-qbox-up.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "qbox", "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        env={**os.environ, **env} if env else None,
    )
    up = QboxUp(data_dir=data_dir, port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"qbox up exited with {process.returncode}:\n{up.log()[-4000:]}")
        try:
            if httpx.get(f"{up.base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(up)
            raise RuntimeError(f"qbox up did not answer in {timeout} s:\n{up.log()[-4000:]}")
        time.sleep(0.2)
    up.api_key = (data_dir / "admin-key").read_text().strip()
    return up


def stop(up: QboxUp, *, sig: int = signal.SIGINT, grace: float = 30) -> int:
    if up.process.poll() is None:
        up.process.send_signal(sig)  # what Ctrl-C does
        try:
            up.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(up.process.pid, signal.SIGKILL)
            up.process.wait()
    return up.process.returncode


def kill_all_sandboxes(up: QboxUp) -> None:
    try:
        with up.client() as client:
            for sb in client.get("/v1/sandboxes", params={"status": "running"}).json():
                client.delete(f"/v1/sandboxes/{sb['id']}")
    except (httpx.HTTPError, ValueError):
        pass


def _sandbox_ids(data_dir: Path) -> list[str]:
    db = data_dir / "qbox.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM sandboxes")]


def leftover_cgroups(data_dir: Path, sandbox_ids: list[str]) -> list[Path]:
    parent = HostNames.for_data_dir(data_dir).cgroup_parent.strip("/")
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for sandbox_id in sandbox_ids:
            path = hierarchy / parent / sandbox_id
            if path.is_dir():
                found.append(path)
    return found


def scrub(data_dir: Path) -> None:
    """Remove every trace a qbox instance can leave on the host (for a failed test)."""
    ids = _sandbox_ids(data_dir)
    for runtime in ("crun", "runc"):
        runtime_root = data_dir / "runtime" / runtime
        if not runtime_root.exists() or shutil.which(runtime) is None:
            continue
        listing = subprocess.run([runtime, "--root", str(runtime_root), "list", "--format", "json"],
                                 capture_output=True, text=True)
        try:
            containers = json.loads(listing.stdout or "[]") or []
        except ValueError:
            containers = []
        for container in containers:
            subprocess.run([runtime, "--root", str(runtime_root), "delete", "--force",
                            container["id"]], capture_output=True)
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    prefix = str(data_dir)
    for target in sorted((line.split()[1] for line in mounts if line.split()[1].startswith(prefix)),
                         key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    for cgroup in leftover_cgroups(data_dir, ids):
        kill_and_remove(cgroup)
    scrub_names(data_dir)


def leftovers(data_dir: Path) -> list[str]:
    """What killed sandboxes left behind: overlay mounts, cgroups (with their processes)."""
    found = [f"mount {line.split()[1]}" for line in Path("/proc/self/mounts").read_text().splitlines()
             if line.split()[1].startswith(str(data_dir / "sandboxes"))]
    found += [f"cgroup {path}" for path in leftover_cgroups(data_dir, _sandbox_ids(data_dir))]
    return found


@contextmanager
def running_qbox(data_dir: Path, *, check_leaks: bool = True,
                 env: dict[str, str] | None = None) -> Iterator[QboxUp]:
    """A `qbox up` for the duration (``env`` added to its environment); afterwards every
    sandbox is killed through the API and nothing may be left on the host (checked, then
    scrubbed regardless)."""
    up = start(data_dir, env=env)
    leaked: list[str] = []
    try:
        yield up
    finally:
        kill_all_sandboxes(up)
        stop(up)
        if check_leaks:
            leaked = leftovers(data_dir)
        scrub(data_dir)
    assert not leaked, f"killed sandboxes left behind: {leaked}"

