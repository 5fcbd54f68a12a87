"""A sandbox's states on the agent and the events that move it: the one place that sets them.

::

    creating --booted--> running --init_exited | halted | deleted | lost
                                   | timed_out | fenced--> stopped

Every change of ``Sandbox.status`` goes through ``advance``, by the table
below; an event the table does not list for the sandbox's state is refused.
A sandbox stops once, and the first reason it stopped for is the one kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from qbox.agent.isolation import OOM_EXIT_REASON, init_killed_by_oom
from qbox.agent.runtime.base import ExitStatus
from qbox.agent.sandbox import Sandbox, SandboxStatus
from qbox.core.errors import InternalError
from qbox.core.timefmt import utcnow

# exitReason of a sandbox removed through the API.
DELETED_REASON = "deleted"
# exitReason of a sandbox the agent ended at its deadline itself (no control plane did).
TIMEOUT_REASON = "timeout"
# exitReason of a sandbox killed when its agent fenced itself (no control plane answered).
FENCED_REASON = "fenced"


class SandboxEvent(StrEnum):
    BOOTED = "booted"  # its init runs
    INIT_EXITED = "init_exited"  # its init ended by itself (its watcher saw it)
    HALTED = "halted"  # the agent ended its processes, keeping its files (a build's commit)
    DELETED = "deleted"  # removed through the API (possible in every state)
    LOST = "lost"  # found by a restarted agent without a live init
    TIMED_OUT = "timed_out"  # past its deadline, ended by the agent's own deadline loop
    FENCED = "fenced"  # killed because no control plane answered the agent for too long


_S, _E = SandboxStatus, SandboxEvent

# (state, event) → the state it moves to; None: the event changes nothing in that state.
TRANSITIONS: Mapping[tuple[SandboxStatus, SandboxEvent], SandboxStatus | None] = {
    (_S.CREATING, _E.BOOTED): _S.RUNNING,
    (_S.RUNNING, _E.INIT_EXITED): _S.STOPPED,
    # Halted or deleted first: that end stands.
    (_S.STOPPED, _E.INIT_EXITED): None,
    (_S.RUNNING, _E.HALTED): _S.STOPPED,
    (_S.STOPPED, _E.HALTED): _S.STOPPED,
    (_S.CREATING, _E.DELETED): _S.STOPPED,
    (_S.RUNNING, _E.DELETED): _S.STOPPED,
    (_S.STOPPED, _E.DELETED): _S.STOPPED,
    (_S.CREATING, _E.LOST): _S.STOPPED,
    (_S.RUNNING, _E.LOST): _S.STOPPED,
    # It had stopped before the restart, and why is on record already.
    (_S.STOPPED, _E.LOST): None,
    # The agent ends only running sandboxes this way (a boot in flight holds the sandbox's
    # lock, so both wait until it runs); one that stopped first keeps its own reason.
    (_S.RUNNING, _E.TIMED_OUT): _S.STOPPED,
    (_S.STOPPED, _E.TIMED_OUT): None,
    (_S.RUNNING, _E.FENCED): _S.STOPPED,
    (_S.STOPPED, _E.FENCED): None,
}


class TransitionRefused(InternalError):
    """An event that cannot happen in the sandbox's state: a bug in the agent, not the caller."""


def advance(sandbox: Sandbox, event: SandboxEvent, reason: str | None = None) -> bool:
    """Move ``sandbox`` on ``event``; ``reason`` is why it stopped, when it stops. True when
    the sandbox changed (the caller saves it if it keeps its state file)."""
    key = (sandbox.status, event)
    if key not in TRANSITIONS:
        raise TransitionRefused(f"sandbox {sandbox.id}: {event.value} is refused when "
                                f"{sandbox.status.value}")
    target = TRANSITIONS[key]
    if target is None:
        return False
    sandbox.status = target
    if event is SandboxEvent.BOOTED:
        sandbox.booted_at = utcnow()
    if target is SandboxStatus.STOPPED:
        sandbox.exit_reason = sandbox.exit_reason or reason
    return True


def init_exit_reason(status: ExitStatus | None, oom_kills: int | None) -> str:
    """Why a sandbox whose init ended stopped (``exitReason``, docs/agent-protocol.md)."""
    if init_killed_by_oom(status, oom_kills):
        return OOM_EXIT_REASON
    if status is None:
        return "init exited"
    if status.signal:
        return f"init killed by signal {status.signal}"
    return f"init exited with code {status.exit_code}"
