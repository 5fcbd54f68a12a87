"""The agent's sandbox state machine: every transition of its table, and the ones it refuses."""

from __future__ import annotations

import ast
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qbox.agent.lifecycle import (
    DELETED_REASON,
    TRANSITIONS,
    SandboxEvent,
    TransitionRefused,
    advance,
    init_exit_reason,
)
from qbox.agent.runtime.base import ExitStatus
from qbox.agent.sandbox import Sandbox, SandboxParams, SandboxStatus

AGENT_SRC = Path(__file__).resolve().parents[3] / "src" / "qbox" / "agent"
BOOTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _sandbox(status: SandboxStatus, exit_reason: str | None = None) -> Sandbox:
    booted = None if status is SandboxStatus.CREATING else BOOTED_AT
    return Sandbox(SandboxParams("sb_lifecycle1", "sha256:x"), Path("/nowhere"), BOOTED_AT,
                   status=status, booted_at=booted, exit_reason=exit_reason)


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS))
def test_every_transition_of_the_table(state: SandboxStatus, event: SandboxEvent) -> None:
    sandbox = _sandbox(state)
    target = TRANSITIONS[(state, event)]

    changed = advance(sandbox, event, "why")

    assert changed is (target is not None)
    assert sandbox.status is (target or state)
    if target is SandboxStatus.STOPPED:
        assert sandbox.exit_reason == "why"
    elif target is None:
        assert sandbox.exit_reason is None
    if event is SandboxEvent.BOOTED:
        assert sandbox.booted_at is not None and sandbox.booted_at > BOOTED_AT


@pytest.mark.parametrize(
    ("state", "event"),
    [pair for pair in itertools.product(SandboxStatus, SandboxEvent) if pair not in TRANSITIONS])
def test_an_event_the_table_does_not_list_is_refused(state: SandboxStatus,
                                                      event: SandboxEvent) -> None:
    sandbox = _sandbox(state)
    with pytest.raises(TransitionRefused):
        advance(sandbox, event, "why")
    assert (sandbox.status, sandbox.exit_reason) == (state, None)


def test_the_refusals_are_the_impossible_events() -> None:
    refused = {pair for pair in itertools.product(SandboxStatus, SandboxEvent)
               if pair not in TRANSITIONS}
    assert refused == {
        (SandboxStatus.RUNNING, SandboxEvent.BOOTED),
        (SandboxStatus.STOPPED, SandboxEvent.BOOTED),
        (SandboxStatus.CREATING, SandboxEvent.INIT_EXITED),
        (SandboxStatus.CREATING, SandboxEvent.HALTED),
        # The agent ends a sandbox itself only once it runs (its boot holds the lock).
        (SandboxStatus.CREATING, SandboxEvent.TIMED_OUT),
        (SandboxStatus.CREATING, SandboxEvent.FENCED),
    }


def test_a_sandbox_keeps_the_first_reason_it_stopped_for() -> None:
    sandbox = _sandbox(SandboxStatus.RUNNING)
    assert advance(sandbox, SandboxEvent.HALTED, "build committing")
    assert not advance(sandbox, SandboxEvent.INIT_EXITED, "init killed by signal 9")
    assert advance(sandbox, SandboxEvent.DELETED, DELETED_REASON)
    assert (sandbox.status, sandbox.exit_reason) == (SandboxStatus.STOPPED, "build committing")


def test_a_stopped_sandbox_without_a_reason_takes_the_next_one() -> None:
    sandbox = _sandbox(SandboxStatus.STOPPED)  # a state file written without one
    assert advance(sandbox, SandboxEvent.DELETED, DELETED_REASON)
    assert sandbox.exit_reason == DELETED_REASON


def test_the_reason_an_init_exit_is_recorded_with() -> None:
    assert init_exit_reason(ExitStatus.killed_by(9), 1) == "oom"
    assert init_exit_reason(ExitStatus.killed_by(9), 0) == "init killed by signal 9"
    assert init_exit_reason(ExitStatus(3), None) == "init exited with code 3"
    assert init_exit_reason(None, None) == "init exited"


def test_only_the_lifecycle_module_changes_a_sandboxs_state() -> None:
    """``status``/``exit_reason``/``booted_at`` of a Sandbox are assigned in lifecycle.py alone
    (a runtime's container status is another thing: it is never a SandboxStatus)."""
    offenders = []
    for path in sorted(AGENT_SRC.rglob("*.py")):
        if path.name == "lifecycle.py" and path.parent == AGENT_SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            else:
                continue
            for target in targets:
                if not isinstance(target, ast.Attribute):
                    continue
                sets_sandbox_status = (target.attr == "status"
                                       and "SandboxStatus" in ast.unparse(node))
                if sets_sandbox_status or target.attr in ("exit_reason", "booted_at"):
                    offenders.append(f"{path.relative_to(AGENT_SRC)}:{node.lineno}")
    assert offenders == []
