"""Auto-kill and start-up reconciliation: pure decisions, then against the app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from qbox.agent.isolation import IsolationPolicy
from qbox.agent.sandbox import SandboxParams
from qbox.core.states import SandboxState
from qbox.core.timefmt import utcnow
from qbox.protocol.sandboxes import SandboxInfo
from qbox.server.services.host_view import OnHost, compare
from qbox.server.services.reaper import due_for_reaping
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.agent_host import RunningAgent
from tests.unit.server.helpers import eventually, set_deadline
from tests.unit.server.test_sandboxes_api import spawn


def test_due_for_reaping_picks_live_sandboxes_past_their_deadline() -> None:
    now = utcnow()
    candidates = [
        ("sb_past", "running", now - timedelta(seconds=1)),
        ("sb_exact", "booting", now),
        ("sb_future", "running", now + timedelta(seconds=1)),
        ("sb_disabled", "running", None),
        ("sb_ended", "killed", now - timedelta(days=1)),
    ]
    assert due_for_reaping(candidates, now) == ["sb_past", "sb_exact"]


def test_reconcile_plan() -> None:
    decided = compare(
        "local",
        on_host={"sb_known": OnHost("running"), "sb_unknown": OnHost("running"),
                 "sb_stopped": OnHost("stopped"), "sb_midboot": OnHost("running")},
        believed={"sb_known": SandboxState.RUNNING, "sb_stopped": SandboxState.RUNNING,
                  "sb_gone": SandboxState.RUNNING, "sb_midboot": SandboxState.BOOTING},
        at_start=True,
    )
    assert decided.remove_from_host == ["sb_midboot", "sb_stopped", "sb_unknown"]
    assert [e.sandbox_id for e in decided.ended] == ["sb_gone", "sb_midboot", "sb_stopped"]


def _sweep(h: Harness) -> list[str]:
    services = h.client.app.state.services  # type: ignore[attr-defined]
    return h.client.portal.call(services.reaper.sweep)  # type: ignore[union-attr]


def test_sweep_terminates_expired_sandboxes_with_reason(harness: Harness) -> None:
    expired = spawn(harness, {"timeoutSeconds": 60})
    alive = spawn(harness, {"timeoutSeconds": 60})
    set_deadline(harness.settings.data_dir, expired["id"], utcnow() - timedelta(seconds=1))
    assert _sweep(harness) == [expired["id"]]
    got = harness.client.get(f"/v1/sandboxes/{expired['id']}", headers=harness.auth()).json()
    assert got["status"] == "terminated" and got["endReason"].startswith("timeout")
    assert expired["id"] in harness.agent.deleted
    assert alive["id"] not in harness.agent.deleted
    assert _sweep(harness) == []  # idempotent


def test_deadline_that_passed_while_down_is_enforced_at_start(tmp_path: Path, database: str | None) -> None:
    with RunningAgent(tmp_path / "agent") as agent:
        gen = make_harness(tmp_path, agent, database=database)
        h = next(gen)
        sb = spawn(h, {"timeoutSeconds": 60})
        gen.close()  # qbox stops; the sandbox keeps running on the host
        set_deadline(tmp_path, sb["id"], utcnow() - timedelta(minutes=5))
        gen = make_harness(tmp_path, agent, database=database)
        h = next(gen)
        assert _sweep(h) == [sb["id"]]
        got = h.client.get(f"/v1/sandboxes/{sb['id']}", headers=h.auth()).json()
        assert got["status"] == "terminated"
        gen.close()


def test_restart_keeps_keys_and_reconciles(tmp_path: Path, database: str | None) -> None:
    with RunningAgent(tmp_path / "agent") as agent:
        gen = make_harness(tmp_path, agent, database=database)
        h = next(gen)
        key = h.admin_key
        kept = spawn(h)
        lost = spawn(h)
        gen.close()
        agent.forget(lost["id"])  # vanished while qbox was down
        image = agent.params(kept["id"]).image_digest
        agent.call(agent.manager.create, SandboxParams("sb_stranger", image))  # nobody knows it
        gen = make_harness(tmp_path, agent, database=database)
        h = next(gen)
        assert h.admin_key == key  # no second admin, the key file still works
        got = h.client.get(f"/v1/sandboxes/{kept['id']}", headers=h.auth()).json()
        assert got["status"] == "running"
        got = h.client.get(f"/v1/sandboxes/{lost['id']}", headers=h.auth()).json()
        assert got["status"] == "failed" and "lost" in got["endReason"]
        logs = h.client.get(f"/v1/sandboxes/{lost['id']}/logs", headers=h.auth()).json()
        assert "lost" in logs[-1]["message"]
        assert "sb_stranger" in agent.deleted and "sb_stranger" not in agent.sandbox_ids()
        gen.close()


def _ended_on_host(running: list[str] | dict[str, str],
                   on_host: dict[str, dict[str, str]]) -> dict[str, str]:
    """The periodic host sync's decision: id -> endReason."""
    diff = compare("local", {sandbox_id: SandboxState.RUNNING for sandbox_id in running},
                   {sandbox_id: OnHost.from_agent(SandboxInfo.model_validate({"id": sandbox_id, **row}))
                    for sandbox_id, row in on_host.items()},
                   at_start=False)
    assert diff.strangers == []  # unknown containers are left to the start-up reconcile
    return {e.sandbox_id: e.change.reason for e in diff.ended}


def test_ended_on_host_decisions() -> None:
    decided = _ended_on_host(
        ["sb_ok", "sb_oom", "sb_gone", "sb_crashed"],
        {"sb_ok": {"status": "running"}, "sb_oom": {"status": "stopped", "exitReason": "oom"},
         "sb_crashed": {"status": "stopped"}, "sb_unknown": {"status": "running"}},
    )
    assert set(decided) == {"sb_oom", "sb_gone", "sb_crashed"}
    assert decided["sb_oom"] == "failed: out of memory: the sandbox used all of its memory and was stopped"
    assert decided["sb_gone"].startswith("lost")
    assert decided["sb_crashed"] == "failed: the sandbox's runtime stopped unexpectedly"


def test_end_reasons_never_carry_the_agents_or_a_runtimes_words() -> None:
    said = {"sb_signal": "init killed by signal 9", "sb_exit": "init exited with code 128",
            "sb_urpc": 'urpc method "containerManager.WaitPID" failed: EOF',
            "sb_restart": "lost: its init is gone (agent or host restarted)"}
    decided = _ended_on_host(said, {sandbox_id: {"status": "stopped", "exitReason": reason}
                                    for sandbox_id, reason in said.items()})
    for sandbox_id, reason in said.items():
        assert reason not in decided[sandbox_id]
        assert not {"init", "urpc", "signal", "gVisor", "runsc", "crun"} & set(decided[sandbox_id].split())
    assert decided["sb_restart"] == "failed: the sandbox was lost when its host's agent restarted"


def test_host_sync_marks_an_oom_killed_sandbox_failed(harness: Harness,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from qbox.server.services.hostsync import sync_host

    sb = spawn(harness)
    other = spawn(harness)
    # The OOM killer ends the sandbox's init: its cgroup counts a kill, its init dies of SIGKILL.
    monkeypatch.setattr(IsolationPolicy, "oom_counter", lambda self, sandbox_id: lambda: 1)
    harness.agent.kill_init(sb["id"])
    eventually(lambda: sb["id"] not in harness.agent.running_ids())
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    decided = harness.client.portal.call(sync_host, services.ctx, services.lifecycle, "local")  # type: ignore[union-attr]
    assert [e.sandbox_id for e in decided.ended] == [sb["id"]]
    got = harness.client.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).json()
    assert got["status"] == "failed" and "out of memory" in got["endReason"]
    logs = harness.client.get(f"/v1/sandboxes/{sb['id']}/logs", headers=harness.auth()).json()
    assert "out of memory" in logs[-1]["message"] and logs[-1]["level"] == "error"
    assert harness.client.get(f"/v1/sandboxes/{other['id']}", headers=harness.auth()).json()["status"] == "running"
