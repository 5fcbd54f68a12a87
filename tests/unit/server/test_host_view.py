"""The one decision reconcile and the host sync share: the database's view against the host's."""

from __future__ import annotations

import pytest

from qbox.core.sandbox_ends import HOST_RESTARTED, OUT_OF_MEMORY, RUNTIME_STOPPED
from qbox.core.states import SandboxState
from qbox.protocol.sandboxes import SandboxInfo
from qbox.server.services.host_view import OnHost, compare
from qbox.server.services.lifecycle import LifecycleEvent

S = SandboxState
E = LifecycleEvent
GONE = None
RUNS = OnHost("running")
OOM = OnHost("stopped", "oom")
RESTARTED = OnHost("stopped", "lost: its init is gone (agent or host restarted)")
CRASHED = OnHost("stopped")
TIMED_OUT = OnHost("stopped", "timeout")

# believed state, what the host says, at start? -> (event or None, endReason or None, remove its container?)
CASES = [
    (S.RUNNING, RUNS, True, None, None, False),
    (S.RUNNING, RUNS, False, None, None, False),
    (S.RUNNING, GONE, True, E.MISSING_ON_HOST, "lost: host h1 no longer has this sandbox", False),
    (S.RUNNING, GONE, False, E.MISSING_ON_HOST, "lost: host h1 no longer has this sandbox", False),
    (S.RUNNING, OOM, True, E.ENDED_ON_HOST, f"failed: {OUT_OF_MEMORY}", True),
    (S.RUNNING, OOM, False, E.ENDED_ON_HOST, f"failed: {OUT_OF_MEMORY}", True),
    (S.RUNNING, RESTARTED, True, E.ENDED_ON_HOST, f"failed: {HOST_RESTARTED}", True),
    (S.RUNNING, CRASHED, False, E.ENDED_ON_HOST, f"failed: {RUNTIME_STOPPED}", True),
    # The host ended it at its deadline before any control plane did: a timeout, not a failure.
    (S.RUNNING, TIMED_OUT, False, E.DEADLINE_REACHED,
     "timeout: auto-killed at its deadline, by its host (deadline passed)", True),
    # While serving, a sandbox not yet running belongs to its boot task.
    (S.BOOTING, RUNS, False, None, None, False),
    (S.BOOTING, GONE, False, None, None, False),
    (S.PENDING, GONE, False, None, None, False),
    # At start no boot is in flight any more: it can never finish.
    (S.BOOTING, RUNS, True, E.BOOT_LOST,
     "lost: its boot on host h1 did not finish (the control plane stopped)", True),
    (S.BOOTING, GONE, True, E.BOOT_LOST,
     "lost: its boot on host h1 did not finish (the control plane stopped)", False),
    (S.PAUSED, CRASHED, True, E.BOOT_LOST,
     "lost: its boot on host h1 did not finish (the control plane stopped)", True),
]


@pytest.mark.parametrize(("believed", "on_host", "at_start", "event", "reason", "removed"), CASES)
def test_one_sandbox(believed: SandboxState, on_host: OnHost | None, at_start: bool,
                     event: LifecycleEvent | None, reason: str | None, removed: bool) -> None:
    host = {} if on_host is None else {"sb_1": on_host}
    diff = compare("h1", {"sb_1": believed}, host, at_start=at_start)
    if event is None:
        assert diff.ended == []
    else:
        [ending] = diff.ended
        assert (ending.sandbox_id, ending.change.event, ending.change.reason) == ("sb_1", event, reason)
        assert reason is not None and reason.startswith(("lost: ", "failed: ", "timeout: "))
    assert diff.remove_from_host == (["sb_1"] if removed else [])
    assert diff.strangers == []


def test_containers_nobody_holds_are_removed_only_at_start() -> None:
    host = {"sb_unknown": RUNS, "sb_known": RUNS}
    at_start = compare("h1", {"sb_known": S.RUNNING}, host, at_start=True)
    assert at_start.strangers == ["sb_unknown"] and at_start.ended == []
    assert at_start.remove_from_host == ["sb_unknown"]
    serving = compare("h1", {"sb_known": S.RUNNING}, host, at_start=False)
    assert serving.strangers == [] and serving.remove_from_host == []
    # A host back after missing heartbeats is swept: what it holds of ended sandboxes goes.
    swept = compare("h1", {"sb_known": S.RUNNING}, host, at_start=False, sweep=True)
    assert swept.strangers == ["sb_unknown"] and swept.ended == []


def test_the_agents_row_is_read_as_it_is_written() -> None:
    def listed(row: dict[str, str]) -> OnHost:
        return OnHost.from_agent(SandboxInfo.model_validate(row))
    assert listed({"id": "sb_1", "status": "stopped", "exitReason": "oom"}) == OOM
    assert listed({"id": "sb_1", "status": "running"}) == RUNS
