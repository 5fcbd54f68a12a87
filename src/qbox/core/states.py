"""Sandbox lifecycle states (WIRE_PROTOCOL.md §7)."""

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
