"""Database tables. Schema changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

from qbox.core.timefmt import utcnow


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, whatever the backend stores (SQLite keeps naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Disabled users keep their history (sandboxes, audit) but cannot act.
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class WebSession(Base):
    """A dashboard login. Only the hash of the cookie value is stored."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEntry(Base):
    """Append-only; each row's hash covers its content and the previous row's hash."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_ts", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column()
    actor_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    actor_email: Mapped[str | None] = mapped_column(String(320), default=None)
    api_key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    source_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_id: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
    outcome: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the chain's newest id and hash. Updating it serialises writers across replicas."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Host(Base):
    """A machine that runs sandboxes: the embedded agent of ``qbox up`` (pulled) or an agent
    that joined with a token (pushes heartbeats). Figures are the agent's last report."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    # Where the control plane dials the agent: a unix socket path or http(s)://host:port.
    address: Mapped[str] = mapped_column(Text)
    # Liveness as the host monitor last judged it: ready | unhealthy | down (core/hosts.py).
    status: Mapped[str] = mapped_column(String(16))
    # Drained (cordoned) by an operator: no new sandboxes; running ones run to their end.
    draining: Mapped[bool] = mapped_column(default=False, server_default=false())
    # "embedded" (qbox up's own agent, health pulled) or "joined" (heartbeats pushed).
    kind: Mapped[str] = mapped_column(String(16), default="embedded", server_default="embedded")
    total_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    total_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    # The agent's data disk at the last report (None: never reported).
    disk_total_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    disk_free_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    sandbox_disks_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cpu_percent: Mapped[float | None] = mapped_column(Float, default=None)
    memory_used_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    max_sandboxes: Mapped[int | None] = mapped_column(Integer, default=None)
    version: Mapped[str] = mapped_column(String(64), default="", server_default="")
    runtimes: Mapped[list[str]] = mapped_column(JSON, default=list)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Image digests the host's store holds.
    images: Mapped[list[str]] = mapped_column(JSON, default=list)
    # sha256 of the host credential a joined agent heartbeats with (None: embedded, removed).
    credential_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The last heartbeat (joined) or answered health call (embedded).
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    # Removed by an operator (qbox hosts remove): kept for the sandboxes that ran there.
    removed_at: Mapped[datetime | None] = mapped_column(default=None)


class HostPlacement(Base):
    """One row per host, locked by each spawn placed there until its sandbox's row commits:
    spawns to one host take turns (no overcommit), and heartbeats, which write the host's
    own row, never wait behind them."""

    __tablename__ = "host_placements"

    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    placed: Mapped[int] = mapped_column(BigInteger, default=0)


class JoinToken(Base):
    """A one-time token an agent exchanges for its host credential. Only the hash is kept."""

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    # Labels the joining host gets (e.g. {"gpu": "true"}).
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    host_id: Mapped[str | None] = mapped_column(String(64), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ClusterKey(Base):
    """Secrets every replica shares, made by the first one to start (name → value)."""

    __tablename__ = "cluster_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuotaColumns:
    """The six per-user quotas; a null column falls back (override -> default -> setting)."""

    sandboxes: Mapped[int | None] = mapped_column(Integer, default=None)
    vcpus: Mapped[int | None] = mapped_column(Integer, default=None)
    memory_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    disk_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    commands: Mapped[int | None] = mapped_column(Integer, default=None)
    shells: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuotaDefaults(QuotaColumns, Base):
    """One row (id 1): the defaults admins set at runtime over the ``QBOX_QUOTA_*`` settings."""

    __tablename__ = "quota_defaults"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class UserQuota(QuotaColumns, Base):
    """One user's overrides of the defaults."""

    __tablename__ = "user_quotas"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    builtin: Mapped[bool] = mapped_column(default=False)
    # Who made it (None: built in, or made before templates had owners: admins only).
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None, index=True)
    # Public templates (and built-ins) are seen and spawned by every user; only an admin sets it.
    public: Mapped[bool] = mapped_column(default=False, server_default=false())
    image_ref: Mapped[str] = mapped_column(Text, default="")
    image_digest: Mapped[str] = mapped_column(String(80), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    build_error: Mapped[str | None] = mapped_column(Text, default=None)
    default_vcpus: Mapped[int] = mapped_column(Integer, default=1)
    default_memory_mb: Mapped[int] = mapped_column(Integer, default=512)
    default_timeout_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    enable_ssh: Mapped[bool] = mapped_column(default=False)
    allow_internet_access: Mapped[bool] = mapped_column(default=True, server_default=true())
    default_disk_mb: Mapped[int] = mapped_column(Integer, default=2048, server_default="2048")
    runtime: Mapped[str] = mapped_column(String(16), default="crun", server_default="crun")
    envs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    services: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Labels a host must carry, with these values, to run its sandboxes (services/scheduler.py).
    host_selector: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")
    # How a template is built from its image, kept so a rebuild repeats it.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")
    start_cmd: Mapped[str | None] = mapped_column(Text, default=None)
    ready_cmd: Mapped[str | None] = mapped_column(Text, default=None)
    ready_timeout_s: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    # None: the sandbox account "user".
    default_user: Mapped[str | None] = mapped_column(String(64), default=None)
    workdir: Mapped[str | None] = mapped_column(Text, default=None)
    # Where the built image was pushed ("" when no registry is configured).
    registry_ref: Mapped[str] = mapped_column(Text, default="", server_default="")
    base_digest: Mapped[str] = mapped_column(String(80), default="", server_default="")
    build_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    build_started_at: Mapped[datetime | None] = mapped_column(default=None)
    build_finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # "eager": the kernel starts at boot; "lazy": at the first code-interpreter call.
    code_interpreter: Mapped[str] = mapped_column(String(8), default="lazy", server_default="lazy")
    # Pooled sandboxes kept booted (services/pools.py). None: QBOX_WARM_POOL_DEFAULT for a
    # built-in, 0 for the rest.
    warm_pool_size: Mapped[int | None] = mapped_column(Integer, default=None)
    # Pooled sandboxes start their kernel at boot (a claim's first code then answers at once).
    warm_pool_eager: Mapped[bool] = mapped_column(default=True, server_default=true())
    # "image" (an image and steps), "dockerfile" (a Dockerfile and an uploaded context) or
    # "git" (a Dockerfile in a git repository).
    source: Mapped[str] = mapped_column(String(16), default="image", server_default="image")
    dockerfile: Mapped[str | None] = mapped_column(Text, default=None)
    build_args: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")
    # The uploaded build context (build_contexts.id) a dockerfile template is built from.
    build_context_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # A git source: the URL, the ref asked for, the commit it resolved to, and the paths in it.
    git_url: Mapped[str | None] = mapped_column(Text, default=None)
    git_ref: Mapped[str | None] = mapped_column(Text, default=None)
    resolved_commit_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    dockerfile_path: Mapped[str | None] = mapped_column(Text, default=None)
    context_path: Mapped[str | None] = mapped_column(Text, default=None)
    # A hash of every build input (a from-git cache hit reuses a ready build with the same key).
    build_key: Mapped[str | None] = mapped_column(String(80), default=None, index=True)
    # Set on a cache hit: the template whose build this one reuses.
    built_from_template_id: Mapped[str | None] = mapped_column(String(80), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BuildContext(Base):
    """An uploaded Docker build context (a tar), kept for its template's builds and rebuilds."""

    __tablename__ = "build_contexts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TemplateBuildLog(Base):
    """The lines of a template's current build (a rebuild starts over)."""

    __tablename__ = "template_build_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    template_id: Mapped[str] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class Sandbox(Base):
    __tablename__ = "sandboxes"
    __table_args__ = (Index("ix_sandboxes_status_deadline", "status", "deadline_at"),
                      Index("ix_sandboxes_host_status", "host_id", "status"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id"), index=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), default=None)
    status: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_size_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    allow_internet_access: Mapped[bool] = mapped_column(default=True, server_default=true())
    runtime: Mapped[str] = mapped_column(String(16), default="crun", server_default="crun")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    envs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    # Absolute, so the auto-kill survives restarts; None when disabled.
    deadline_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    booted_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Claimed from its template's warm pool rather than booted for its request.
    from_pool: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Keys of ``envs`` whose values are secret (masked with ?mask=true).
    env_secrets: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")


class SandboxPort(Base):
    """A sandbox port exposed at a preview URL (services/ports.py, http/preview.py)."""

    __tablename__ = "sandbox_ports"

    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id", ondelete="CASCADE"),
                                            primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # public | private | signed_url
    visibility: Mapped[str] = mapped_column(String(16))
    # rewrite (the upstream sees Host: localhost:{port}) | preserve
    host_header_mode: Mapped[str] = mapped_column(String(16), default="rewrite")
    # Users (ids or emails) besides the owner who may open a private port.
    allowed_users: Mapped[list[str]] = mapped_column(JSON, default=list)
    # HMAC key of its signed URLs: minting a new one rotates it, revoking every older URL.
    signing_key: Mapped[str] = mapped_column(String(64))
    signed_url_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    signed_url_ttl_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WarmSandbox(Base):
    """A pooled sandbox: booted from a template for no one yet (services/pools.py). It has no
    ``sandboxes`` row, so no user sees it; a claim deletes this row and writes that one."""

    __tablename__ = "warm_sandboxes"
    __table_args__ = (Index("ix_warm_sandboxes_template_status", "template_id", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    # booting | ready (booted, waiting for a claim).
    status: Mapped[str] = mapped_column(String(16))
    # The template's build it was booted from: a rebuild makes it stale.
    build_generation: Mapped[int] = mapped_column(Integer)
    image_digest: Mapped[str] = mapped_column(String(80))
    runtime: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_size_mb: Mapped[int] = mapped_column(Integer)
    allow_internet_access: Mapped[bool] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)


class SandboxEvent(Base):
    """The sandbox's log: lifecycle events and the start command's output."""

    __tablename__ = "sandbox_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="CASCADE"), index=True
    )
    time: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    component: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
