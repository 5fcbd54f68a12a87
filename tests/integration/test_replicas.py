"""Two control-plane processes on one database (SQLite, PostgreSQL): a revocation on one holds
on the other at once.

The agent runs with the fake runtime (no sandboxes are needed here), so this
also shows `qbox server` and `qbox agent --listen` working as separate processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import postgres
from tests.qbox_process import ROOT, free_port

pytestmark = pytest.mark.integration


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up: {log.read_text()[-3000:]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    base = Path(tempfile.mkdtemp(prefix="qbox-replicas-"))
    data_dir = base / "data"
    data_dir.mkdir()
    agent_port, port_a, port_b = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    databases = contextlib.ExitStack()

    def launch(name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = base / f"{name}.log"
        process = subprocess.Popen([sys.executable, "-m", "qbox", *args], cwd=ROOT, env={**os.environ, **env},
                                   stdout=log.open("wb"), stderr=subprocess.STDOUT)
        processes.append(process)
        return process, log

    try:
        agent, agent_log = launch("agent", ["agent", "--data-dir", str(data_dir), "--listen",
                                            f"127.0.0.1:{agent_port}"], {"QBOX_AGENT_RUNTIME": "fake"})
        _wait(f"http://127.0.0.1:{agent_port}/internal/v1/health", agent, agent_log)
        env = {"QBOX_DATA_DIR": str(data_dir), "QBOX_AGENT_ADDRESS": f"http://127.0.0.1:{agent_port}",
               "QBOX_AGENT_SECRET": (data_dir / "agent-secret").read_text().strip()}
        if request.param == "postgresql":
            pg = databases.enter_context(postgres.running_cluster())
            env["QBOX_DATABASE_URL"] = databases.enter_context(pg.database())
        a, log_a = launch("server-a", ["server", "--port", str(port_a)], env)
        _wait(f"http://127.0.0.1:{port_a}/healthz", a, log_a)
        b, log_b = launch("server-b", ["server", "--port", str(port_b)], env)
        _wait(f"http://127.0.0.1:{port_b}/healthz", b, log_b)
        yield (f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}",
               (data_dir / "admin-key").read_text().strip())
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        databases.close()
        shutil.rmtree(base, ignore_errors=True)


def test_revocation_on_one_replica_holds_on_the_other(cluster: tuple[str, str, str]) -> None:
    url_a, url_b, admin = cluster
    with httpx.Client(base_url=url_a, headers={"Authorization": f"Bearer {admin}"}) as a:
        created = a.post("/v1/api-keys", json={"name": "shared", "scopes": ["sandboxes:read"]}).json()
    secret, key_id = created["secret"], created["key"]["id"]
    with httpx.Client(base_url=url_b, headers={"Authorization": f"Bearer {secret}"}) as b:
        assert b.get("/v1/sandboxes").status_code == 200
        with httpx.Client(base_url=url_a, headers={"Authorization": f"Bearer {admin}"}) as a:
            assert a.post(f"/v1/api-keys/{key_id}/revoke").status_code == 200
        r = b.get("/v1/sandboxes")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    # Both replicas append to one audit chain (each writes off its request path), and it verifies.
    with httpx.Client(base_url=url_b, headers={"Authorization": f"Bearer {admin}"}) as b:
        deadline = time.monotonic() + 10
        while True:
            actions = sorted(e["action"] for e in b.get("/v1/audit").json()["data"])
            if actions == ["api_key.create", "api_key.revoke", "auth.failed"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert actions == ["api_key.create", "api_key.revoke", "auth.failed"]
        assert b.get("/v1/audit/verify").json()["ok"] is True
