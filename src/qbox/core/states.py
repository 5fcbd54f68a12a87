"""Sandbox lifecycle states (WIRE_PROTOCOL.md §7).

Which event moves a sandbox from one state to another is the control plane's
lifecycle table (``server/services/lifecycle.py``); here are only the states.
"""

from __future__ import annotations

from enum import StrEnum


class SandboxState(StrEnum):
    PENDING = "pending"
    BOOTING = "booting"
    RUNNING = "running"
    PAUSED = "paused"
    SNAPSHOTTED = "snapshotted"
    TERMINATED = "terminated"
    KILLED = "killed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({SandboxState.TERMINATED, SandboxState.KILLED, SandboxState.FAILED})
# A live sandbox may still end; a terminal one never changes again.
LIVE_STATES = frozenset(SandboxState) - TERMINAL_STATES
