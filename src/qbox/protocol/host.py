"""What a host says of itself: ``GET /health`` (pulled by the control plane), and joining and
heartbeats (pushed by an agent that joined with ``qbox agent --join``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

from qbox.protocol.wire import Wire, WireTime


class Capacity(Wire):
    """The CPUs the agent may run on, physical memory, its data dir's filesystem, and what
    the sandboxes' disk images there already take (in MiB)."""

    vcpus: int
    memory_mb: int
    disk_total_mb: int
    disk_free_mb: int
    sandbox_disks_mb: int = 0


class Usage(Wire):
    """Measured, not reserved: CPU busy over the last interval (0–100 across all CPUs), memory
    in use on the machine, and the data dir's filesystem."""

    cpu_percent: float = 0.0
    memory_used_mb: int = 0
    disk_used_mb: int = 0
    disk_total_mb: int = 0


class Health(Wire):
    version: str
    # The default driver: "crun", "runc" or "fake".
    runtime: str
    # What a SandboxSpec.runtime may ask for here.
    runtimes: list[str]
    sandboxes: int
    capacity: Capacity | None = None
    # Newer agents say more (all optional, so an older agent's health still reads).
    hostname: str | None = None
    usage: Usage | None = None
    # The image digests this host's store holds (the scheduler prefers such hosts).
    images: list[str] = Field(default_factory=list)
    # How many sandboxes this host runs at most (its address pool and settings); None: no limit.
    max_sandboxes: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    # The built-in templates this host can build from its machine's own base image (name ->
    # image ref on this host), offered by joined agents: a fleet with no embedded agent gets
    # its built-in templates from the first host that offers them.
    builtin_images: dict[str, str] = Field(default_factory=dict)

    @field_validator("capacity", "usage", mode="wrap")
    @classmethod
    def _garbled_is_missing(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # An agent from before capacity reports, or a garbled one: the control plane falls
        # back to what it last knew of the host, never fails the call.
        try:
            return handler(value)
        except ValidationError:
            return None


class HostReport(Health):
    """What an agent that joined sends with its join and every heartbeat: its health, and
    the address the control plane dials for data-plane calls (``--listen``)."""

    address: str


class JoinRequest(Wire):
    """``POST /v1/agent/join``: a join token (``qbox hosts token create``), used once."""

    token: str
    report: HostReport
    # A PEM certificate request for the agent's TLS listener, signed by the cluster CA when
    # the control plane runs TLS (docs/operations.md, "TLS between hosts and control plane").
    csr_pem: str | None = None


class JoinReply(Wire):
    OMIT_NONE = frozenset({"ca_cert_pem", "certificate_pem"})

    host_id: str
    # What the agent presents on every heartbeat (the control plane keeps only its hash).
    credential: str
    # What the control plane presents on every data-plane call to this agent.
    agent_secret: str
    heartbeat_seconds: float
    # Seconds without a heartbeat answered before the agent fences itself.
    fence_seconds: float
    ca_cert_pem: str | None = None
    certificate_pem: str | None = None


class CertificateRequest(Wire):
    """``POST /v1/agent/certificate``, with the host credential: a joined host asks for a new
    certificate for its TLS listener (its own nears its end, or the cluster CA changed)."""

    csr_pem: str


class CertificateReply(Wire):
    certificate_pem: str
    ca_cert_pem: str


class HeartbeatReply(Wire):
    """The control plane's answer to ``POST /v1/agent/heartbeat``."""

    host_id: str
    # ready | draining | unhealthy | down, as the control plane sees the host now.
    status: str
    heartbeat_seconds: float
    fence_seconds: float
    # Each live sandbox of this host and its deadline (null: no auto-kill). The agent
    # enforces these itself, so deadlines hold while every control plane is away.
    deadlines: dict[str, WireTime | None] = Field(default_factory=dict)
