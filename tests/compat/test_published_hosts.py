"""The published CLI's hosts commands and a plain `qbox doctor` (no --skip) against our server:
list and get as it renders them, drain and cordon (both POST /drain) and uncordon as the API then
reports the host, a member refused, and every doctor check passing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import published_env, run_published_cli
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat


def host_status(up: QboxUp, host_id: str) -> str:
    with up.client() as client:
        answer = client.get(f"/v1/hosts/{host_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


@pytest.fixture
def host_id(qbox_for_compat: QboxUp) -> Iterator[str]:
    """The embedded host; ready again afterwards whatever the test did, for the other compat tests."""
    with qbox_for_compat.client() as client:
        (host,) = client.get("/v1/hosts").json()
    try:
        yield str(host["id"])
    finally:
        with qbox_for_compat.client() as client:
            client.post(f"/v1/hosts/{host['id']}/uncordon")


def test_hosts_list_and_get(published_python: Path, qbox_for_compat: QboxUp, host_id: str) -> None:
    up = qbox_for_compat
    listed = run_published_cli(published_python, up, "-o", "json", "hosts", "list")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["status"]) == (host_id, "ready")
    assert row["totalVcpus"] > 0 and row["totalMemoryMb"] > 0 and row["sandboxCount"] >= 0
    table = run_published_cli(published_python, up, "-o", "table", "hosts", "list")
    assert table.returncode == 0, table.stderr
    assert "HOST ID" in table.stdout and host_id in table.stdout and "ready" in table.stdout
    got = run_published_cli(published_python, up, "-o", "json", "hosts", "get", host_id)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["id"] == host_id
    prose = run_published_cli(published_python, up, "-o", "prose", "hosts", "get", host_id)
    assert prose.returncode == 0 and host_id in prose.stdout, prose.stderr
    missing = run_published_cli(published_python, up, "hosts", "get", "host_nope")
    assert missing.returncode == 4, missing.stdout + missing.stderr


def test_drain_cordon_and_uncordon(published_python: Path, qbox_for_compat: QboxUp, host_id: str) -> None:
    up = qbox_for_compat
    for verb, status in (("drain", "draining"), ("uncordon", "ready"), ("cordon", "draining"),
                         ("uncordon", "ready")):
        done = run_published_cli(published_python, up, "hosts", verb, host_id)
        assert done.returncode == 0, (verb, done.stdout + done.stderr)
        assert host_status(up, host_id) == status, verb


def test_a_members_key_is_refused(published_python: Path, qbox_for_compat: QboxUp, host_id: str) -> None:
    up = qbox_for_compat
    with up.client() as client:
        user = client.post("/v1/users", json={"email": "hosts-member@example.com", "role": "member"})
        assert user.status_code == 201, user.text
        made = client.post("/v1/api-keys", json={"name": "member", "scopes": ["*"], "userId": user.json()["id"]})
        assert made.status_code == 201, made.text
    key = made.json()["secret"]
    for args in (("hosts", "list"), ("hosts", "get", host_id), ("hosts", "drain", host_id)):
        refused = run_published_cli(published_python, up, *args, key=key)
        assert refused.returncode == 3, (args, refused.stdout + refused.stderr)
    assert host_status(up, host_id) == "ready"


def test_a_plain_doctor_passes_every_check(published_python: Path, qbox_for_compat: QboxUp, host_id: str,
                                           tmp_path: Path) -> None:
    env = published_env(qbox_for_compat, XDG_CONFIG_HOME=str(tmp_path))
    done = subprocess.run([str(published_python.parent / "qbox"), "doctor"], env=env, capture_output=True,
                          text=True, timeout=200, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("hosts registered", "a host accepting sandboxes", "a template is ready", "test sandbox spawn",
                  "test code execution", "test sandbox kill"):
        assert f"✓ {check}" in done.stdout, (check, done.stdout)
    assert "✗" not in done.stdout and "all checks passed" in done.stdout
    assert host_status(qbox_for_compat, host_id) == "ready"
