"""Quotas and admission on a real `qbox up` (crun): issue 13, findings 8 and 4 (quota half).

Its own small instance: CPUs not overcommitted (so this host's real CPU count is the capacity),
two sandboxes and one command per member.
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
        with running_qbox(base / "data", env={"QBOX_OVERCOMMIT_CPU": "1.0", "QBOX_QUOTA_SANDBOXES": "2",
                                              "QBOX_QUOTA_COMMANDS": "1"}) as up:
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


def test_admission_refuses_past_the_hosts_real_cpus(small: QboxUp) -> None:
    cpus = len(os.sched_getaffinity(0))
    with small.client() as admin:  # admins are exempt from quotas, not from capacity
        try:
            first = spawn(admin, vcpus=cpus)
            assert first.status_code == 201 and first.json()["status"] == "running", first.text
            before = containers(small)
            refused = spawn(admin)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "host_no_capacity" and error["details"]["transient"] is True
            assert (error["details"]["resource"], error["details"]["capacity"]) == ("vcpus", cpus)
            assert refused.headers["Retry-After"] == "5"
            # Nothing half-made: no row, no container.
            assert containers(small) == before
            assert len(admin.get("/v1/sandboxes", params={"status": "running"}).json()) == 1
            assert admin.delete(f"/v1/sandboxes/{first.json()['id']}").status_code == 204
            again = spawn(admin)
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
