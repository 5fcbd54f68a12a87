"""A fork bomb as the sandbox user is contained under crun and under gVisor alike.

Under crun the pids cgroup stops it (EAGAIN); under gVisor the spec's pids
limit only reaches the host's pids cgroup, which counts the sentry's threads,
so a bomb used to fill the sentry's memory until the host killed the whole
sandbox (issue 13, finding 11). Now gVisor's kernel stops it at the
sandbox's task limit (``runsc_spec.tasks_limit``).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.qbox_process import QboxUp
from tests.security.conftest import Box

pytestmark = pytest.mark.security

BOMB = "f(){ f|f & }; f"
# How long the bomb runs while the sandbox must stay up (the old gVisor sandbox died in ~15 s).
HOLD_SECONDS = 40
INTERNALS = ("urpc", "gvisor", "runsc", "containerManager", "sentry")


def _transient(response: httpx.Response) -> bool:
    return (response.status_code == 503
            and response.json()["error"].get("details", {}).get("transient") is True)


def _stop_everything_as_root(box: Box) -> None:
    """``kill -9 -1`` as root until a kill got in (under crun it needs a free pid, which the
    bomb frees now and then) and nothing but root's processes is left."""
    deadline = time.monotonic() + 90
    while True:
        r = box.api.post(f"/v1/sandboxes/{box.id}/exec", timeout=60, json={
            "cmd": "/bin/sh", "user": "root", "timeoutSeconds": 30,
            "args": ["-c", "for i in 1 2 3 4 5; do kill -9 -1; sleep 0.2; done; "
                           "ps -e -o uid= | grep -cv '^ *0$'"]})
        if r.status_code == 200 and r.json()["stdout"].strip() == "0":
            return
        # 400: no pid free for the kill yet; a transient 503: the agent, on cores the bomb
        # keeps busy, did not answer in time (the API says to retry, and so do we).
        assert r.status_code in (200, 400) or _transient(r), r.text
        assert not any(word in r.text.lower() for word in INTERNALS), r.text
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)


def test_a_fork_bomb_as_the_sandbox_user_leaves_the_sandbox_running(
        make_box: Any, qbox_sec: QboxUp, runtime: str) -> None:
    box = make_box()
    neighbour = make_box()

    started = time.monotonic()
    r = box.api.post(f"/v1/sandboxes/{box.id}/exec", timeout=120, json={
        "cmd": "/bin/sh", "args": ["-c", BOMB], "timeoutSeconds": 30})
    assert time.monotonic() - started < 90  # the exec returns (its shell ends at once)
    assert r.status_code == 200, r.text
    assert not any(word in r.text.lower() for word in INTERNALS), r.text

    # The bomb goes on in the background, against the limit: the sandbox holds.
    hold_until = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < hold_until:
        info = box.api.get(f"/v1/sandboxes/{box.id}").json()
        assert info["status"] == "running", info
        time.sleep(2)
    assert httpx.get(f"{qbox_sec.base_url}/healthz", timeout=5).status_code == 200
    assert neighbour.sh("echo alive")["stdout"] == "alive\n"

    _stop_everything_as_root(box)
    out = box.sh("echo ok")
    assert (out["exitCode"], out["stdout"]) == (0, "ok\n")
    assert box.api.get(f"/v1/sandboxes/{box.id}").json()["status"] == "running"
