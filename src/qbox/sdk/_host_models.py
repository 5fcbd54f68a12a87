"""Hosts and their join tokens as the API reports them (parsed from the wire like ``_models``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qbox.sdk._models import _int, _opt_str, _required, _str, _str_map, _time, as_list, as_object, bad_response


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    # A figure the host never reported is null, which is not the same as 0.
    return None if data.get(key) is None else _int(data, key)


def _opt_float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_response(f"{key} is not a number: {value!r}")
    return float(value)


def _strings(data: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    return tuple(str(item) for item in as_list(data.get(key), what))


@dataclass(frozen=True)
class Host:
    """A machine that runs sandboxes.

    ``used_*``/``total_*`` are reservations (what its sandboxes asked for and
    what it offers); ``cpu_percent``, ``memory_used_mb`` and ``disk_*_mb`` are
    measured by the host and ``None`` until it has reported them.
    """

    id: str
    hostname: str = ""
    status: str = ""  # ready | draining | unhealthy | down
    kind: str = ""  # embedded | joined
    sandbox_count: int = 0
    used_vcpus: int = 0
    total_vcpus: int = 0
    used_memory_mb: int = 0
    total_memory_mb: int = 0
    used_disk_mb: int = 0
    cpu_percent: float | None = None
    memory_used_mb: int | None = None
    disk_used_mb: int | None = None
    disk_total_mb: int | None = None
    max_sandboxes: int | None = None
    runtimes: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()  # ids of the templates whose image the host holds
    version: str = ""
    address: str = ""
    last_heartbeat_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_ready(self) -> bool:
        """Whether new sandboxes may be placed on it."""
        return self.status == "ready"

    @classmethod
    def from_wire(cls, value: Any) -> Host:
        data = as_object(value, "a host")
        return cls(
            id=_required(data, "id", "a host"),
            hostname=_str(data, "hostname"),
            status=_str(data, "status"),
            kind=_str(data, "kind"),
            sandbox_count=_int(data, "sandboxCount"),
            used_vcpus=_int(data, "usedVcpus"),
            total_vcpus=_int(data, "totalVcpus"),
            used_memory_mb=_int(data, "usedMemoryMb"),
            total_memory_mb=_int(data, "totalMemoryMb"),
            used_disk_mb=_int(data, "usedDiskMb"),
            cpu_percent=_opt_float(data, "cpuPercent"),
            memory_used_mb=_opt_int(data, "memoryUsedMb"),
            disk_used_mb=_opt_int(data, "diskUsedMb"),
            disk_total_mb=_opt_int(data, "diskTotalMb"),
            max_sandboxes=_opt_int(data, "maxSandboxes"),
            runtimes=_strings(data, "runtimes", "a host's runtimes"),
            templates=_strings(data, "templates", "a host's templates"),
            version=_str(data, "version"),
            address=_str(data, "address"),
            last_heartbeat_at=_time(data, "lastHeartbeatAt"),
            labels=_str_map(data, "labels"),
            created_at=_time(data, "createdAt"),
            raw=data,
        )


@dataclass(frozen=True)
class HostToken:
    """A join token as listed: never its secret."""

    id: str
    status: str  # active | used | expired | revoked
    created_at: datetime | None = None
    expires_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    used_at: datetime | None = None
    host_id: str | None = None  # the host that joined with it
    revoked_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_wire(cls, value: Any) -> HostToken:
        data = as_object(value, "a host token")
        return cls(
            id=_required(data, "id", "a host token"),
            status=_str(data, "status"),
            created_at=_time(data, "createdAt"),
            expires_at=_time(data, "expiresAt"),
            labels=_str_map(data, "labels"),
            used_at=_time(data, "usedAt"),
            host_id=_opt_str(data, "hostId"),
            revoked_at=_time(data, "revokedAt"),
            raw=data,
        )


@dataclass(frozen=True)
class CreatedHostToken:
    """A new join token. The server shows ``token`` this once; it and the join command that holds it
    are kept out of ``repr``."""

    id: str
    token: str = field(repr=False)
    join_command: str = field(default="", repr=False)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> CreatedHostToken:
        data = as_object(value, "a created host token")
        return cls(
            id=_required(data, "id", "a created host token"),
            token=_required(data, "token", "a created host token"),
            join_command=_str(data, "joinCommand"),
            created_at=_time(data, "createdAt"),
            expires_at=_time(data, "expiresAt"),
            labels=_str_map(data, "labels"),
            raw=data,
        )
