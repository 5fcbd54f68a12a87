"""Quotas and admission on a real `qbox up` (crun): issue 13, findings 8 and 4 (quota half).

Its own instance, with the default admission settings and small member quotas (two
sandboxes, one command).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.qbox_process import QboxUp, running_qbox

pytestmark = pytest.mark.integration

SPAWN = "/v1/sandboxes?wait=true&waitTimeoutSec=120"


@pytest.fixture(scope="module")
def small() -> Iterator[QboxUp]:
    base = Path(tempfile.mkdtemp(prefix="qbox-quotas-"))
    try:
        with running_qbox(base / "data", env={"QBOX_QUOTA_SANDBOXES": "2", "QBOX_QUOTA_COMMANDS": "1"}) as up:
            yield up
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def member(small: QboxUp) -> str:
    with small.client() as admin:
        user = admin.post("/v1/users", json={"email": "quota-member@example.com"}).json()
        created = admin.post("/v1/api-keys", json={"name": "m", "scopes": ["*"], "userId": user["id"]})
        assert created.status_code == 201, created.text
        return str(created.json()["secret"])


def containers(up: QboxUp) -> list[str]:
    listing = subprocess.run(["crun", "--root", str(up.data_dir / "runtime" / "crun"), "list", "--format", "json"],
                             capture_output=True, text=True, check=True)
    return [c["id"] for c in json.loads(listing.stdout or "[]") or []]


def spawn(client: httpx.Client, vcpus: int = 1) -> httpx.Response:
    return client.post(SPAWN, json={"templateId": "tpl_python", "vcpus": vcpus, "memoryMb": 256})


def kill_all(client: httpx.Client) -> None:
    for sb in client.get("/v1/sandboxes", params={"status": "running"}).json():
        client.delete(f"/v1/sandboxes/{sb['id']}")


def fitting(up: QboxUp, vcpus: int, memory_mb: int, disk_mb: int) -> int:
    """How many such sandboxes this host admits with the defaults (CPUs x 4, memory x 1,
    free disk less 4 GiB), from its real numbers."""
    disk = os.statvfs(up.data_dir)
    return min(len(os.sched_getaffinity(0)) * 4 // vcpus,
               os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // memory_mb,
               (disk.f_bavail * disk.f_frsize // 2**20 - 4096) // disk_mb)


def test_finding_8_big_spawns_stop_at_the_hosts_real_capacity(small: QboxUp) -> None:
    # Before: four {4 vCPU, 8 GiB, 20 GiB} sandboxes all ran on a 2-CPU, 24 GB host.
    big = {"templateId": "tpl_python", "vcpus": 4, "memoryMb": 8192, "diskSizeMb": 20480}
    fits = fitting(small, 4, 8192, 20480)
    assert fits < 4, "this host is big enough for all four: the reproduction needs a smaller one"
    with small.client() as admin:  # admins are exempt from quotas, not from capacity
        try:
            answers = [admin.post(SPAWN, json=big) for _ in range(4)]
            assert [r.status_code for r in answers] == [201] * fits + [503] * (4 - fits), \
                [r.text for r in answers]
            assert all(r.json()["status"] == "running" for r in answers[:fits])
            refused = answers[fits]
            error = refused.json()["error"]
            assert error["code"] == "host_no_capacity" and error["details"]["transient"] is True
            assert refused.headers["Retry-After"] == "5"
            # Nothing half-made: no row, no container for the refused ones.
            running = admin.get("/v1/sandboxes", params={"status": "running"}).json()
            assert len(running) == fits and len(containers(small)) == fits
            # Room again once one ends.
            assert admin.delete(f"/v1/sandboxes/{answers[0].json()['id']}").status_code == 204
            again = admin.post(SPAWN, json=big)
            assert again.status_code == 201 and again.json()["status"] == "running", again.text
        finally:
            kill_all(admin)


def test_a_members_quotas_hold_on_real_sandboxes_and_commands(small: QboxUp, member: str) -> None:
    with small.client(member) as client:
        try:
            sandboxes = [spawn(client) for _ in range(2)]
            assert [r.status_code for r in sandboxes] == [201, 201], [r.text for r in sandboxes]
            over = spawn(client)
            assert over.status_code == 429, over.text
            assert over.json()["error"]["details"] == {"quota": "sandboxes", "limit": 2, "used": 2, "requested": 1}
            sb = sandboxes[0].json()["id"]
            started = client.post(f"/v1/sandboxes/{sb}/commands", json={"cmd": "sleep", "args": ["300"]})
            assert started.status_code == 201, started.text
            refused = client.post(f"/v1/sandboxes/{sb}/exec", json={"cmd": "true"})
            assert refused.status_code == 429 and refused.json()["error"]["details"]["quota"] == "commands"
            # The real agent says it ended: the slot is free again.
            pid = started.json()["pid"]
            assert client.delete(f"/v1/sandboxes/{sb}/commands/{pid}", params={"signal": 9}).status_code == 204
            deadline = time.monotonic() + 30
            while client.get(f"/v1/sandboxes/{sb}/commands/{pid}").json()["alive"]:
                assert time.monotonic() < deadline, "the killed command did not end"
                time.sleep(0.1)
            done = client.post(f"/v1/sandboxes/{sb}/exec", json={"cmd": "echo", "args": ["ok"]})
            assert done.status_code == 200 and done.json()["stdout"] == "ok\n", done.text
            usage = client.get("/v1/quota").json()["usage"]
            assert (usage["sandboxes"], usage["commands"]) == (2, 0)
        finally:
            kill_all(client)
