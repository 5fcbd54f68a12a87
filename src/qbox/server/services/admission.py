"""Admission control: how much a host may give its sandboxes, and the refusal when none can.

A host offers its CPUs and memory times the overcommit ratios
(``QBOX_OVERCOMMIT_CPU``, ``QBOX_OVERCOMMIT_MEMORY``) and, for disks, the
free space of the agent's data disk plus what the sandbox disks there
already hold (their reservations cover it), less ``QBOX_DISK_RESERVE_MB``
for everything else on that filesystem. The live sandboxes placed on the
host reserve what they asked for, booting ones included.

Which host takes a sandbox is the scheduler's decision (services/scheduler.py),
on these limits; ``no_capacity`` is its refusal. The check and the
reservation are one transaction under the chosen host's row lock
(services/placement.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


from qbox.core.errors import HostNoCapacityError
from qbox.server.settings import ServerSettings

RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Resources:
    vcpus: int
    memory_mb: int
    disk_mb: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.vcpus + other.vcpus, self.memory_mb + other.memory_mb,
                         self.disk_mb + other.disk_mb)

    def wire(self) -> dict[str, int]:
        return {"vcpus": self.vcpus, "memoryMb": self.memory_mb, "diskMb": self.disk_mb}


@dataclass(frozen=True)
class HostCapacity:
    """What an agent reported. Disk figures are None from an agent that does not report them."""

    vcpus: int
    memory_mb: int
    disk_total_mb: int | None = None
    disk_free_mb: int | None = None
    # What the sandbox disk images on that disk already hold.
    sandbox_disks_mb: int = 0


@dataclass(frozen=True)
class Overcommit:
    cpu: float
    memory: float
    disk_reserve_mb: int

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Overcommit:
        return cls(settings.overcommit_cpu, settings.overcommit_memory, settings.disk_reserve_mb)

    def limits(self, capacity: HostCapacity) -> tuple[int, int, int | None]:
        """How many vCPUs, MB of memory and MB of disk the live sandboxes may reserve in all."""
        disk = None
        if capacity.disk_free_mb is not None:
            disk = max(0, capacity.disk_free_mb + capacity.sandbox_disks_mb - self.disk_reserve_mb)
        return (int(capacity.vcpus * self.cpu), int(capacity.memory_mb * self.memory), disk)


@dataclass(frozen=True)
class Shortfall:
    """Why a host cannot take a request: the first resource that does not fit."""

    host_id: str
    resource: str  # vcpus | memoryMb | diskMb
    requested: int
    reserved: int
    capacity: int


# How a host passed over before its room was weighed is named (services/scheduler.py's reasons).
_PASSED_OVER = {"notReady": "not ready", "draining": "draining", "runtime": "without runtime {runtime}",
                "selector": "not matching the template's host selector {selector}",
                "image": "without the template's image (it has no registry copy to pull)"}


def no_capacity(shortfalls: Sequence[Shortfall], request: Resources,
                passed_over: Mapping[str, int] | None = None, *, runtime: str = "",
                selector: Mapping[str, str] | None = None) -> HostNoCapacityError:
    """The 503 of a spawn no host takes: the first host short of room, if any, and how many
    hosts were passed over for each reason (``details.reasons``, with ``full``)."""
    passed = {reason: count for reason, count in (passed_over or {}).items() if count}
    labels = ",".join(f"{key}={value}" for key, value in sorted((selector or {}).items()))
    excluded = "; ".join(
        f"{count} host{'' if count == 1 else 's'} "
        + _PASSED_OVER.get(reason, reason).format(runtime=runtime, selector=labels)
        for reason, count in passed.items())
    details: dict[str, object] = {"retryAfterSeconds": RETRY_AFTER_SECONDS, "requested": request.wire()}
    if passed or shortfalls:
        details["reasons"] = {**passed, **({"full": len(shortfalls)} if shortfalls else {})}
    if selector:
        details["hostSelector"] = dict(selector)
    if not shortfalls:
        message = f"no host can run the sandbox: {excluded}" if passed else "no host is online to run the sandbox"
        return HostNoCapacityError(message, details=details, retry_after=RETRY_AFTER_SECONDS)
    first = shortfalls[0]
    details.update(resource=first.resource, hostId=first.host_id, reserved=first.reserved,
                   capacity=first.capacity)
    return HostNoCapacityError(
        f"no host has room for the sandbox: {first.resource} {first.requested} requested, "
        f"{first.reserved} of {first.capacity} reserved on host {first.host_id}"
        + (f" ({len(shortfalls)} hosts full)" if len(shortfalls) > 1 else "")
        + (f"; {excluded}" if excluded else ""),
        details=details, retry_after=RETRY_AFTER_SECONDS)
