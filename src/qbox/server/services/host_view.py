"""What the database believes of a host's sandboxes against what the host says: the decision.

One pure function, used at start (reconcile) and periodically (host sync).
At start no boot of a previous process is still in flight, so a sandbox not
yet ``running`` can never finish booting, and containers the database does
not hold live belong to no one. While serving, a sandbox not yet ``running``
belongs to its boot task, and a container without a live row is left to the
next start (its boot task or its end removes it).

Pooled sandbox of a warm pool (services/pools.py) are known too, never
strangers; a ready one its host no longer runs loses its row, and at start a
pooled one still booting can never finish booting either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qbox.core.sandbox_ends import describe_end
from qbox.core.states import SandboxState
from qbox.protocol.sandboxes import SandboxInfo
from qbox.server.services.lifecycle import Change, LifecycleEvent

# The agent's status of a sandbox that runs (docs/agent-protocol.md).
HOST_RUNNING = "running"
# The agent's exitReason of a sandbox it ended at its deadline (agent/deadlines.py).
HOST_TIMED_OUT = "timeout"
# A pooled sandbox's row status once booted (services/pools.py's READY).
POOL_READY = "ready"


@dataclass(frozen=True)
class OnHost:
    """One sandbox as its host lists it."""

    status: str
    exit_reason: str | None = None

    @classmethod
    def from_agent(cls, row: SandboxInfo) -> OnHost:
        return cls(row.status, row.exit_reason)


@dataclass(frozen=True)
class Ending:
    sandbox_id: str
    change: Change
    # The host still holds its container, which must go once the sandbox is marked.
    on_host: bool


@dataclass
class HostDiff:
    ended: list[Ending] = field(default_factory=list)
    # Containers nobody holds live: unknown to the database, or of sandboxes it has as ended.
    strangers: list[str] = field(default_factory=list)
    # Pooled sandboxes whose row goes (the host lost them, or their boot cannot finish), and
    # which of them the host still holds.
    pooled_gone: list[str] = field(default_factory=list)
    pooled_on_host: list[str] = field(default_factory=list)

    @property
    def remove_from_host(self) -> list[str]:
        return sorted([e.sandbox_id for e in self.ended if e.on_host] + self.strangers
                      + self.pooled_on_host)


def compare(host_id: str, believed: Mapping[str, SandboxState], on_host: Mapping[str, OnHost],
            *, at_start: bool, sweep: bool = False, pooled: Mapping[str, str] | None = None) -> HostDiff:
    """What to change for the sandboxes the database has live on ``host_id`` (``believed``)
    and for its pooled ones (``pooled``: id -> "booting" | "ready"), given what the host
    runs (``on_host``).

    ``sweep``: the host is back after missing heartbeats, so its containers of sandboxes
    that ended meanwhile are strangers too. ``believed`` must then be read after the host
    was listed, so that a boot in flight (its row is written before its container) is known.
    """
    diff = HostDiff()
    for sandbox_id, state in sorted(believed.items()):
        row = on_host.get(sandbox_id)
        change = _ended(host_id, state, row, at_start=at_start)
        if change is not None:
            diff.ended.append(Ending(sandbox_id, change, on_host=row is not None))
    pooled = pooled or {}
    for sandbox_id, status in sorted(pooled.items()):
        row = on_host.get(sandbox_id)
        if status == POOL_READY:
            gone = row is None or row.status != HOST_RUNNING
        else:
            gone = at_start
        if gone:
            diff.pooled_gone.append(sandbox_id)
            if row is not None:
                diff.pooled_on_host.append(sandbox_id)
    if at_start or sweep:
        diff.strangers = sorted(set(on_host) - set(believed) - set(pooled))
    return diff


def _ended(host_id: str, state: SandboxState, row: OnHost | None, *, at_start: bool) -> Change | None:
    if state != SandboxState.RUNNING:
        return Change.of(LifecycleEvent.BOOT_LOST, host=host_id) if at_start else None
    if row is None:
        return Change.of(LifecycleEvent.MISSING_ON_HOST, host=host_id)
    if row.status != HOST_RUNNING:
        if row.exit_reason == HOST_TIMED_OUT:
            # The host enforced the deadline itself (no control plane did in time).
            return Change.of(LifecycleEvent.DEADLINE_REACHED, at="its deadline, by its host")
        # The agent's exitReason is its own shorthand: the user reads plain words.
        return Change.of(LifecycleEvent.ENDED_ON_HOST, why=describe_end(row.exit_reason))
    return None
