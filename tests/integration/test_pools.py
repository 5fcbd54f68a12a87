"""Warm pools on a real `qbox up` (crun): a claimed pooled sandbox is its claimer's alone, with
their labels, envs and limits (the memory limit really applies), a second claim gets another
one, the pool refills, and an empty pool means a cold boot.

Its own instance: tpl_python keeps a pool of two (QBOX_WARM_POOL_DEFAULT).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.qbox_process import QboxUp, running_qbox

pytestmark = pytest.mark.integration

T = TypeVar("T")
POOL = 2
SPAWN = "/v1/sandboxes?wait=true&waitTimeoutSec=120"


def until(check: Callable[[], T | None], seconds: float = 120, what: str = "") -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def pool(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/templates/tpl_python")
    assert r.status_code == 200, r.text
    return r.json()["warmPool"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pooled() -> Iterator[QboxUp]:
    base = Path(tempfile.mkdtemp(prefix="qbox-pools-"))
    try:
        with running_qbox(base / "data", env={"QBOX_WARM_POOL_DEFAULT": str(POOL)}) as up:
            try:
                yield up
            finally:
                # Pooled sandboxes outlive a stop (the next start finds them): empty the pool
                # so the leak check finds nothing left.
                with up.client() as admin:
                    # Every built-in has a pool (tpl_python-gvisor too, where runsc is installed).
                    for template in admin.get("/v1/templates").json():
                        if template["warmPool"]["size"]:
                            admin.patch(f"/v1/templates/{template['id']}", json={"warmPool": {"size": 0}})
                    until(lambda: all(t["warmPool"]["ready"] + t["warmPool"]["booting"] == 0
                                      for t in admin.get("/v1/templates").json()) or None,
                          what="the pools to empty")
                    # A boot in flight when its row went removes its container once it is up.
                    until(lambda: not containers(up) or None, what="the pooled containers to go")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def containers(up: QboxUp) -> list[str]:
    """What crun and runsc (when installed) run for this instance."""
    found = []
    for runtime in ("crun", "runsc"):
        root = up.data_dir / "runtime" / runtime
        if not root.exists() or shutil.which(runtime) is None:
            continue
        listing = subprocess.run([runtime, "--root", str(root), "list", "--format", "json"],
                                 capture_output=True, text=True, check=True)
        found += [c["id"] for c in json.loads(listing.stdout or "[]") or []]
    return found


def member_key(admin: httpx.Client, email: str) -> str:
    user = admin.post("/v1/users", json={"email": email}).json()
    created = admin.post("/v1/api-keys", json={"name": "m", "scopes": ["*"], "userId": user["id"]})
    assert created.status_code == 201, created.text
    return str(created.json()["secret"])


def run(client: httpx.Client, sandbox_id: str, command: str, timeout: int = 60) -> dict[str, Any]:
    r = client.post(f"/v1/sandboxes/{sandbox_id}/exec",
                    json={"cmd": "/bin/sh", "args": ["-c", command], "timeoutSeconds": timeout})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_claimed_pooled_sandbox_is_its_claimers_alone_with_their_settings(pooled: QboxUp) -> None:
    with pooled.client() as admin:
        alice_key, bob_key = member_key(admin, "pool-a@example.com"), member_key(admin, "pool-b@example.com")
        until(lambda: pool(admin)["ready"] == POOL, what="the pool to fill")
        with pooled.client(alice_key) as alice, pooled.client(bob_key) as bob:
            r = alice.post(SPAWN, json={"templateId": "tpl_python", "labels": {"team": "alpha"},
                                        "envs": {"MINE": "alice-secret"}, "memoryMb": 128, "vcpus": 1})
            assert r.status_code == 201, r.text
            first = r.json()
            assert first["fromPool"] is True and first["status"] == "running"
            assert first["labels"] == {"team": "alpha"} and first["vm"]["memoryMb"] == 128
            # Another member does not see it.
            assert bob.get(f"/v1/sandboxes/{first['id']}").status_code == 404
            assert first["id"] not in {s["id"] for s in bob.get("/v1/sandboxes").json()}
            assert bob.post(f"/v1/sandboxes/{first['id']}/exec", json={"cmd": "true"}).status_code == 404
            # Its envs are the claimer's, for every later process.
            out = run(alice, first["id"], 'echo "$MINE"')
            assert out["stdout"].strip() == "alice-secret", out
            # The claimed memory limit applies: 200 MB in a 128 MB sandbox is killed.
            hog = run(alice, first["id"], "python3 -c \"b = b'x' * (200 * 1024 * 1024); print('survived')\"")
            assert "survived" not in hog["stdout"] and hog["exitCode"] != 0, hog
            assert run(alice, first["id"], "python3 -c \"b = b'x' * (20 * 1024 * 1024); print('fits')\"")[
                "stdout"].strip() == "fits"
            # A second claim gets another pooled sandbox.
            second = bob.post(SPAWN, json={"templateId": "tpl_python"}).json()
            assert second["fromPool"] is True and second["id"] != first["id"]
            assert run(bob, second["id"], 'echo "[$MINE]"')["stdout"].strip() == "[]"
            # The pool refills, and counts what it gave.
            until(lambda: (lambda p: p["ready"] == POOL and p["claimed"] == 2)(pool(admin)) or None,
                  what="the pool to refill")
            alice.delete(f"/v1/sandboxes/{first['id']}")
            bob.delete(f"/v1/sandboxes/{second['id']}")


def test_an_empty_pool_boots_cold(pooled: QboxUp) -> None:
    with pooled.client() as admin:
        until(lambda: pool(admin)["ready"] == POOL, what="the pool to fill")
        warm = admin.post(SPAWN, json={"templateId": "tpl_python"}).json()
        assert warm["fromPool"] is True
        r = admin.patch("/v1/templates/tpl_python", json={"warmPool": {"size": 0}})
        assert r.status_code == 200, r.text
        until(lambda: (lambda p: p["ready"] + p["booting"] == 0)(pool(admin)) or None, what="the pool to empty")
        cold = admin.post(SPAWN, json={"templateId": "tpl_python"}).json()
        assert cold["fromPool"] is False and cold["status"] == "running"
        assert run(admin, cold["id"], "echo cold")["stdout"].strip() == "cold"
        for sandbox in (warm, cold):
            admin.delete(f"/v1/sandboxes/{sandbox['id']}")
