"""The published CLI's access-control commands against our server: api-keys create|list|revoke|rotate,
audit logs and auth status."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.compat.conftest import run_published_cli
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat


def test_api_keys_create_list_rotate_revoke(published_python: Path, qbox_for_compat: QboxUp) -> None:
    up = qbox_for_compat
    created = run_published_cli(published_python, up, "-o", "json", "api-keys", "create", "--name", "compat",
                      "--scopes", "sandboxes:create,sandboxes:read", "--expires-in", "7")
    assert created.returncode == 0, created.stderr
    first = json.loads(created.stdout)
    assert first["api_key"].startswith("qbox_") and first["key_id"].startswith("key_")

    listed = run_published_cli(published_python, up, "-o", "json", "api-keys", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {k["id"]: k for k in json.loads(listed.stdout)}
    assert rows[first["key_id"]]["name"] == "compat"
    assert first["api_key"] not in listed.stdout

    status = run_published_cli(published_python, up, "-o", "json", "auth", "status", key=first["api_key"])
    assert status.returncode == 0, status.stdout + status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "ok" and info["api_key_id"] == first["key_id"]
    assert info["scopes"] == ["sandboxes:create", "sandboxes:read"]

    rotated = run_published_cli(published_python, up, "-o", "json", "api-keys", "rotate", first["key_id"])
    assert rotated.returncode == 0, rotated.stderr
    second = json.loads(rotated.stdout)
    assert second["revoked"] == first["key_id"] and second["api_key"] != first["api_key"]
    with httpx.Client(base_url=up.base_url) as client:
        old = client.get("/v1/sandboxes", headers={"Authorization": f"Bearer {first['api_key']}"})
        new = client.get("/v1/sandboxes", headers={"Authorization": f"Bearer {second['api_key']}"})
    assert (old.status_code, new.status_code) == (401, 200)
    bad = run_published_cli(published_python, up, "auth", "status", key=first["api_key"])
    assert bad.returncode == 3

    revoked = run_published_cli(published_python, up, "api-keys", "revoke", second["key_id"])
    assert revoked.returncode == 0, revoked.stderr
    with httpx.Client(base_url=up.base_url) as client:
        gone = client.get("/v1/sandboxes", headers={"Authorization": f"Bearer {second['api_key']}"})
    assert gone.status_code == 401


def test_audit_logs(published_python: Path, qbox_for_compat: QboxUp) -> None:
    up = qbox_for_compat
    made = run_published_cli(published_python, up, "-o", "json", "api-keys", "create", "--name", "audited",
                   "--scopes", "sandboxes:read")
    key_id = json.loads(made.stdout)["key_id"]
    logs = run_published_cli(published_python, up, "-o", "json", "audit", "logs", "--since", "1h", "--limit", "50")
    assert logs.returncode == 0, logs.stderr
    entries = json.loads(logs.stdout)
    assert any(e["action"] == "api_key.create" and e["targetId"] == key_id for e in entries)
    table = run_published_cli(published_python, up, "-o", "table", "audit", "logs", "--since", "1h")
    assert table.returncode == 0 and "api_key.create" in table.stdout and key_id in table.stdout
