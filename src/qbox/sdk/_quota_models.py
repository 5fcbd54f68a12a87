"""Per-user quotas as the API reports them: limits, overrides, usage, and the admins' defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qbox.sdk._models import _required, as_object, bad_response

# Python name -> wire name, in the API's order.
QUOTA_FIELDS: dict[str, str] = {"sandboxes": "sandboxes", "vcpus": "vcpus", "memory_mb": "memoryMb",
                                "disk_mb": "diskMb", "commands": "commands", "shells": "shells"}


def _opt_count(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise bad_response(f"quota {key} is not a whole number: {value!r}")
    return value


@dataclass(frozen=True)
class QuotaValues:
    """One number per quota; ``None`` means unlimited (limits), the default (overrides) or the setting (stored
    defaults)."""

    sandboxes: int | None = None
    vcpus: int | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    commands: int | None = None
    shells: int | None = None

    @classmethod
    def from_wire(cls, value: Any, what: str) -> QuotaValues:
        data = as_object(value if value is not None else {}, what)
        return cls(**{name: _opt_count(data, wire) for name, wire in QUOTA_FIELDS.items()})


@dataclass(frozen=True)
class QuotaInfo:
    """A user's quotas: the limits in force, their own overrides, and what they use now.

    Commands (in-flight execs and running background commands) and shells are
    counted by each control-plane replica for what it serves.
    """

    user_id: str
    exempt: bool  # admins: no limits, usage still counted
    limits: QuotaValues
    overrides: QuotaValues
    usage: QuotaValues
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> QuotaInfo:
        data = as_object(value, "a quota")
        return cls(
            user_id=_required(data, "userId", "a quota"),
            exempt=bool(data.get("exempt", False)),
            limits=QuotaValues.from_wire(data.get("limits"), "quota limits"),
            overrides=QuotaValues.from_wire(data.get("overrides"), "quota overrides"),
            usage=QuotaValues.from_wire(data.get("usage"), "quota usage"),
            raw=data,
        )


@dataclass(frozen=True)
class QuotaDefaults:
    """The defaults in force, and what admins stored over the ``QBOX_QUOTA_*`` settings."""

    limits: QuotaValues
    stored: QuotaValues
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> QuotaDefaults:
        data = as_object(value, "quota defaults")
        return cls(limits=QuotaValues.from_wire(data.get("limits"), "quota defaults"),
                   stored=QuotaValues.from_wire(data.get("stored"), "stored quota defaults"), raw=data)
