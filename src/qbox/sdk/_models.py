"""What the SDK returns: frozen dataclasses parsed from the wire's camelCase JSON.

Parsing is tolerant of missing optional fields and strict about shape: a
body that is not what the API promises raises ``QboxError`` (code
``bad_response``), never a ``KeyError``. Objects that mirror a server
resource keep the server's JSON in ``raw`` (the CLI prints it for ``-o json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from qbox.core.errors import QboxError
from qbox.core.states import TERMINAL_STATES, SandboxState
from qbox.core.timefmt import from_wire


def bad_response(message: str) -> QboxError:
    return QboxError(f"unexpected response from the server: {message}", code="bad_response")


def as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_response(f"expected {what} to be a JSON object, got {type(value).__name__}")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_response(f"expected {what} to be a JSON array, got {type(value).__name__}")
    return value


def _int(data: dict[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_response(f"{key} is not an integer: {value!r}") from None


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return default if value is None else str(value)


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def _time(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        return from_wire(value)
    except ValueError:
        return None


def _str_map(data: dict[str, Any], key: str) -> dict[str, str]:
    value = data.get(key)
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _required(data: dict[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise bad_response(f"{what} without {key!r}")
    return value


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    type: str
    version: str = ""


CodeInterpreterMode = Literal["lazy", "eager"]


@dataclass(frozen=True)
class WarmPool:
    """A template's warm pool as asked for: ``size`` sandboxes kept booted and waiting for a
    spawn to claim one; ``eager`` starts their code interpreter too, so a first ``run_code``
    on a claimed one answers at once."""

    size: int
    eager: bool = True

    def body(self) -> dict[str, Any]:
        return {"size": int(self.size), "eager": bool(self.eager)}


@dataclass(frozen=True)
class WarmPoolInfo:
    """A template's warm pool as it stands: ``size`` (the effective one), ``ready`` (booted and
    waiting), ``booting`` (being booted), ``claimed`` (live sandboxes that came from it)."""

    size: int = 0
    eager: bool = True
    ready: int = 0
    booting: int = 0
    claimed: int = 0

    @classmethod
    def from_wire(cls, value: Any) -> WarmPoolInfo:
        data = value if isinstance(value, dict) else {}
        return cls(size=_int(data, "size"), eager=bool(data.get("eager", True)), ready=_int(data, "ready"),
                   booting=_int(data, "booting"), claimed=_int(data, "claimed"))


@dataclass(frozen=True)
class TemplateInfo:
    id: str
    name: str
    status: str
    image_ref: str = ""
    image_digest: str = ""
    size_bytes: int = 0
    build_error: str | None = None
    default_vcpus: int = 0
    default_memory_mb: int = 0
    default_disk_mb: int = 0
    enable_ssh: bool = False
    allow_internet_access: bool = True
    runtime: str = ""
    tags: tuple[str, ...] = ()
    services: tuple[ServiceInfo, ...] = ()
    capabilities: tuple[str, ...] = ()
    source: str = "image"
    builtin: bool = False
    # Seen and spawned by every user (built-ins are); ``owner_id`` is shown to admins and the owner.
    public: bool = False
    owner_id: str | None = None
    built_from_template_id: str | None = None
    # How it was built and how its sandboxes start (templates built from an image).
    steps: tuple[dict[str, Any], ...] = ()
    user: str = ""
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_cmd: str | None = None
    ready_cmd: str | None = None
    ready_timeout_s: int = 0
    # Labels a host must carry to run its sandboxes.
    host_selector: dict[str, str] = field(default_factory=dict)
    # "lazy": a sandbox's kernel starts on its first code call; "eager": at boot.
    code_interpreter: str = "lazy"
    warm_pool: WarmPoolInfo = field(default_factory=WarmPoolInfo)
    registry_ref: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_ready(self) -> bool:
        return self.status == "ready"

    @property
    def is_failed(self) -> bool:
        return self.status == "failed"

    @property
    def is_building(self) -> bool:
        """Neither ready nor failed: the wire's rule for anything else."""
        return not (self.is_ready or self.is_failed)

    @classmethod
    def from_wire(cls, value: Any) -> TemplateInfo:
        data = as_object(value, "a template")
        services = tuple(
            ServiceInfo(name=_str(s, "name"), type=_str(s, "type"), version=_str(s, "version"))
            for s in as_list(data.get("services"), "template services")
            if isinstance(s, dict)
        )
        return cls(
            id=_required(data, "id", "a template"),
            name=_str(data, "name"),
            status=_str(data, "status"),
            image_ref=_str(data, "imageRef"),
            image_digest=_str(data, "imageDigest"),
            size_bytes=_int(data, "sizeBytes"),
            build_error=_opt_str(data, "buildError"),
            default_vcpus=_int(data, "defaultVcpus"),
            default_memory_mb=_int(data, "defaultMemoryMb"),
            default_disk_mb=_int(data, "defaultDiskMb"),
            enable_ssh=bool(data.get("enableSsh", False)),
            allow_internet_access=bool(data.get("allowInternetAccess", True)),
            runtime=_str(data, "runtime"),
            tags=tuple(str(t) for t in as_list(data.get("tags"), "template tags")),
            services=services,
            capabilities=tuple(str(c) for c in as_list(data.get("capabilities"), "template capabilities")),
            source=_str(data, "source", "image"),
            builtin=bool(data.get("builtin", False)),
            public=bool(data.get("public", False)),
            owner_id=_opt_str(data, "ownerId"),
            built_from_template_id=_opt_str(data, "builtFromTemplateId"),
            steps=tuple(s for s in as_list(data.get("steps"), "template steps") if isinstance(s, dict)),
            user=_str(data, "user"),
            workdir=_opt_str(data, "workdir"),
            env=_str_map(data, "env"),
            start_cmd=_opt_str(data, "startCmd"),
            ready_cmd=_opt_str(data, "readyCmd"),
            ready_timeout_s=_int(data, "readyTimeoutS"),
            host_selector=_str_map(data, "hostSelector"),
            # A server from before lazy kernels started every kernel at boot.
            code_interpreter=_str(data, "codeInterpreter", "eager"),
            warm_pool=WarmPoolInfo.from_wire(data.get("warmPool")),
            registry_ref=_str(data, "registryRef"),
            created_at=_time(data, "createdAt"),
            updated_at=_time(data, "updatedAt"),
            raw=data,
        )


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    template_id: str
    status: str
    vcpus: int = 0
    memory_mb: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    timeout_seconds: int = 0
    host_id: str | None = None
    created_at: datetime | None = None
    booted_at: datetime | None = None
    ended_at: datetime | None = None
    allow_internet_access: bool = True
    end_reason: str | None = None
    disk_size_mb: int | None = None
    services: tuple[ServiceInfo, ...] = ()
    # Claimed from its template's warm pool (booted before it was asked for) rather than booted for it.
    from_pool: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def metadata(self) -> dict[str, str]:
        """The sandbox's labels (E2B calls them metadata)."""
        return self.labels

    @property
    def name(self) -> str | None:
        return self.labels.get("name")

    @property
    def state(self) -> SandboxState | None:
        """The status as a ``SandboxState``; ``None`` for a state this SDK does not know."""
        try:
            return SandboxState(self.status)
        except ValueError:
            return None

    @property
    def is_running(self) -> bool:
        return self.status == SandboxState.RUNNING

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @classmethod
    def from_wire(cls, value: Any) -> SandboxInfo:
        data = as_object(value, "a sandbox")
        vm_value = data.get("vm")
        vm: dict[str, Any] = vm_value if isinstance(vm_value, dict) else {}
        services = tuple(
            ServiceInfo(_str(s, "name"), _str(s, "type"), _str(s, "version"))
            for s in as_list(data.get("services"), "services")
            if isinstance(s, dict)
        )
        disk = data.get("diskSizeMb")
        return cls(
            id=_required(data, "id", "a sandbox"),
            template_id=_str(data, "templateId"),
            status=_required(data, "status", "a sandbox"),
            vcpus=_int(vm, "vcpus"),
            memory_mb=_int(vm, "memoryMb"),
            labels=_str_map(data, "labels"),
            timeout_seconds=_int(data, "timeoutSeconds"),
            host_id=_opt_str(data, "hostId"),
            created_at=_time(data, "createdAt"),
            booted_at=_time(data, "bootedAt"),
            ended_at=_time(data, "endedAt"),
            allow_internet_access=bool(data.get("allowInternetAccess", True)),
            end_reason=_opt_str(data, "endReason"),
            disk_size_mb=None if disk is None else _int(data, "diskSizeMb"),
            services=services,
            from_pool=bool(data.get("fromPool", False)),
            raw=data,
        )


@dataclass(frozen=True)
class LogEntry:
    time: datetime | None
    level: str
    component: str
    message: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> LogEntry:
        data = as_object(value, "a log entry")
        return cls(
            time=_time(data, "time"),
            level=_str(data, "level"),
            component=_str(data, "component"),
            message=_str(data, "message"),
            raw=data,
        )


@dataclass(frozen=True)
class ExecResult:
    """The answer of ``POST /exec``: the command ran to completion (or timed out) server-side."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False

    @classmethod
    def from_wire(cls, value: Any) -> ExecResult:
        data = as_object(value, "an exec result")
        return cls(
            stdout=_str(data, "stdout"),
            stderr=_str(data, "stderr"),
            exit_code=_int(data, "exitCode"),
            timed_out=bool(data.get("timedOut", False)),
        )


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class CommandOutput:
    """A chunk of a running command's output."""

    stream: Literal["stdout", "stderr"]
    text: str


class CommandLogs(NamedTuple):
    """A command's complete output so far."""

    stdout: str
    stderr: str

    @classmethod
    def from_wire(cls, value: Any) -> CommandLogs:
        data = as_object(value or {}, "command logs")
        return cls(_str(data, "stdout"), _str(data, "stderr"))


@dataclass(frozen=True)
class CommandStatus:
    pid: int
    alive: bool
    exit_code: int
    signal: int = 0

    @classmethod
    def from_wire(cls, value: Any, pid: int) -> CommandStatus:
        data = as_object(value, "a command status")
        alive = bool(data.get("alive"))
        exit_code = _int(data, "exitCode")
        signal = _int(data, "signal")
        if not alive and exit_code == 0 and signal > 0:
            exit_code = 128 + signal  # killed by a signal is not a success (shell convention)
        return cls(pid=pid, alive=alive, exit_code=exit_code, signal=signal)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    command: list[str]
    started_at: datetime | None
    alive: bool
    exit_code: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> ProcessInfo:
        data = as_object(value, "a process")
        command = data.get("command")
        return cls(
            pid=_int(data, "pid"),
            command=[str(c) for c in command] if isinstance(command, list) else [],
            started_at=_time(data, "startedAt"),
            alive=bool(data.get("alive")),
            exit_code=_int(data, "exitCode"),
            raw=data,
        )


@dataclass(frozen=True)
class SystemInfo:
    version: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> SystemInfo:
        data = as_object(value, "system information")
        return cls(version=_str(data, "version"), raw=data)


@dataclass(frozen=True)
class ClusterCa:
    """The cluster CA's certificate (``GET /v1/cluster/ca``): what hosts and clients trust
    for the control plane's and agents' TLS, and its ``sha256:<hex>`` fingerprint."""

    certificate_pem: str
    fingerprint: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> ClusterCa:
        data = as_object(value, "the cluster CA")
        return cls(certificate_pem=_str(data, "certificatePem"), fingerprint=_str(data, "fingerprint"),
                   raw=data)


@dataclass(frozen=True)
class Identity:
    """Who the API key belongs to (``GET /v1/auth/me``)."""

    api_key_id: str
    scopes: list[str]
    id: str | None = None
    email: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> Identity:
        data = as_object(value, "an identity")
        return cls(
            api_key_id=_str(data, "apiKeyId"),
            scopes=[str(s) for s in as_list(data.get("scopes"), "scopes")],
            id=_opt_str(data, "id"),
            email=_opt_str(data, "email"),
            raw=data,
        )
