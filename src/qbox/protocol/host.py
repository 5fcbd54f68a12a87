"""``GET /health``: what the agent runs and what the control plane admits spawns against."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError, ValidatorFunctionWrapHandler, field_validator

from qbox.protocol.wire import Wire


class Capacity(Wire):
    """The CPUs the agent may run on, physical memory, its data dir's filesystem, and what
    the sandboxes' disk images there already take (in MiB)."""

    vcpus: int
    memory_mb: int
    disk_total_mb: int
    disk_free_mb: int
    sandbox_disks_mb: int = 0


class Health(Wire):
    version: str
    # The default driver: "crun", "runc" or "fake".
    runtime: str
    # What a SandboxSpec.runtime may ask for here.
    runtimes: list[str]
    sandboxes: int
    capacity: Capacity | None = None

    @field_validator("capacity", mode="wrap")
    @classmethod
    def _garbled_is_missing(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # An agent from before capacity reports, or a garbled one: the control plane falls
        # back to what it last knew of the host, never fails the call.
        try:
            return handler(value)
        except ValidationError:
            return None
