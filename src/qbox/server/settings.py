"""Control-plane settings, read from ``QBOX_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from qbox.core.errors import ValidationError


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/qbox")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "qbox"


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QBOX_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    # SQLite under the data dir unless set (e.g. postgresql://… for several replicas).
    database_url: str | None = None

    # Where the local host agent listens: a unix socket path or http://host:port.
    agent_address: str | None = None
    agent_secret: str | None = None

    default_timeout_seconds: int = 300
    max_timeout_seconds: int = 24 * 3600
    max_wait_seconds: int = 300
    default_vcpus: int = 1
    default_memory_mb: int = 512
    max_vcpus: int = 4
    max_memory_mb: int = 8192
    max_disk_mb: int = 20480
    # The largest file one upload may write (the sandbox's disk quota also applies).
    max_file_bytes: int = 5 * 1024**3
    # The input edge (server/http/body.py): the largest JSON or form body (chunked or not;
    # template creation allows 16 MiB), URL (path and query) and request head (line and headers).
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_url_bytes: int = Field(default=8192, ge=1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    reaper_interval_seconds: float = 1.0
    # How often the control plane checks that running sandboxes still run (OOM, crashes).
    host_sync_interval_seconds: float = 5.0
    log_tail_default: int = 1000

    # Token buckets (0 disables one): every request per API key, spawns per
    # API key, failed authentications per source IP.
    rate_limit_requests_per_second: float = 100.0
    rate_limit_request_burst: float = 200.0
    rate_limit_spawns_per_second: float = 20.0
    rate_limit_spawn_burst: float = 50.0
    rate_limit_auth_failures_per_minute: float = 30.0
    rate_limit_auth_failure_burst: float = 20.0
    # Audit entries older than this are removed (0 keeps them forever).
    audit_retention_days: int = 365
    # Dashboard cookies get the Secure flag (set when served over HTTPS).
    secure_cookies: bool = False
    # Interactive shells (WebSocket): the largest client message, open shells per API key
    # (or dashboard user), and how often an open shell's credentials are checked again.
    shell_max_message_bytes: int = 1024 * 1024
    shell_max_per_key: int = 10
    shell_recheck_seconds: float = Field(default=15.0, gt=0)

    # Per-user quotas (admins are exempt): the defaults until an admin changes them at
    # runtime (PUT /v1/quota-defaults); per-user overrides go over either.
    quota_sandboxes: int = Field(default=10, ge=0)
    quota_vcpus: int = Field(default=16, ge=0)
    quota_memory_mb: int = Field(default=32768, ge=0)
    quota_disk_mb: int = Field(default=102400, ge=0)
    # In-flight /exec calls plus running background commands; open shells.
    quota_commands: int = Field(default=32, ge=0)
    quota_shells: int = Field(default=8, ge=0)
    # Admission: the live sandboxes of a host may reserve its CPUs and memory times these.
    # CPU time is shared and mostly idle in sandboxes, so it is overcommitted; memory is not.
    overcommit_cpu: float = Field(default=4.0, gt=0)
    overcommit_memory: float = Field(default=1.0, gt=0)
    # Free space on the agent's data disk that sandbox disk reservations never take.
    disk_reserve_mb: int = Field(default=4096, ge=0)

    # Hosts (docs/operations.md, "Run on many hosts"): joined agents heartbeat this often; a
    # host is unhealthy after three missed beats and down (its sandboxes "host lost") after
    # host_lost_seconds. An agent that no control plane answered for host_fence_seconds
    # (default: host_lost_seconds) kills its own sandboxes.
    host_heartbeat_seconds: float = Field(default=5.0, gt=0)
    host_lost_seconds: float = Field(default=60.0, gt=0)
    host_fence_seconds: float | None = Field(default=None, gt=0)
    # Join tokens live this long unless `qbox hosts token create --ttl` says otherwise.
    join_token_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # The scheduler scores this many ready hosts with room, sampled (0: all of them).
    scheduler_sample: int = Field(default=0, ge=0)
    # The address this replica's agents are told to reach it at (joined agents' heartbeats).
    public_url: str | None = None
    # HTTPS on this replica's listener (docs/operations.md, "TLS between hosts and control
    # plane"): "auto" serves a certificate the cluster CA signs for tls_names (comma-separated
    # DNS names and IPs; default this machine's hostname, localhost and 127.0.0.1), written to
    # DATA_DIR/tls/ at each start; tls_cert and tls_key (PEM files) serve an operator's own.
    tls: str = Field(default="off", pattern="^(off|auto)$")
    tls_names: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    # Template builds: every built image is pushed to "{registry}/templates/<name>:build-<n>"
    # ("host[:port][/prefix]") when set, so hosts other than the builder can pull it.
    registry: str | None = None
    # Where templates' images may come from (core/image_refs.py): registries ("host[:port]",
    # comma-separated) that may be on internal addresses (the registry above is one too), and
    # the directories admins' local sources (oci:, oci-archive:, docker-archive:) must be in.
    trusted_registries: str | None = None
    import_dirs: str | None = None
    # Memory of a build sandbox: the template's default memory, at least this.
    build_memory_mb: int = Field(default=2048, ge=64)
    # What the agents' image gc spares (QBOX_IMAGE_GC_GRACE_SECONDS, read by both): a
    # deletion's gc runs again once this has passed, to take what the grace kept.
    image_gc_grace_seconds: float = Field(default=60.0, ge=0)

    # Warm pools (services/pools.py): the pool size of the built-in templates, how long a
    # pooled sandbox waits for a claim before it is replaced, and the largest size a template
    # may ask for.
    warm_pool_default: int = Field(default=0, ge=0)
    warm_pool_max_age_seconds: int = Field(default=3600, ge=1, validation_alias=AliasChoices(
        "warm_pool_max_age_seconds", "QBOX_WARM_POOL_MAX_AGE"))
    warm_pool_max_size: int = Field(default=50, ge=0)

    # Preview URLs (services/preview.py): a sandbox's exposed port answers at
    # "{port}-{sandbox}.{preview_domain}" on this listener (its scheme and port: public_url's,
    # else this replica's). "localhost" works in a browser on this machine with no DNS set-up;
    # elsewhere point a wildcard DNS name at the control plane.
    preview_domain: str = Field(default="localhost", min_length=1, max_length=200)
    # Exposed ports per sandbox (more: 507 port_count_limit).
    max_ports_per_sandbox: int = Field(default=20, ge=1)
    # Signed preview URLs: the lifetime when none is asked for, and the longest allowed.
    signed_url_default_ttl_seconds: int = Field(default=3600, ge=1)
    signed_url_max_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)

    # Templates from git (services/git_sources.py): only https URLs to public addresses,
    # unless this is set (tests and trusted networks: http://, file:// and private addresses).
    git_allow_insecure: bool = False
    git_timeout_seconds: float = Field(default=300.0, gt=0)
    # The largest build context: an upload, or a repository's context directory.
    max_build_context_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)

    @property
    def fence_seconds(self) -> float:
        return self.host_fence_seconds or self.host_lost_seconds

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'qbox.db'}"

    def resolved_agent_address(self) -> str:
        return self.agent_address or str(self.data_dir / "agent.sock")

    def check_caps(self, vcpus: int, memory_mb: int, disk_mb: int,
                   names: tuple[str, str, str] = ("vcpus", "memoryMb", "diskSizeMb")) -> None:
        """A 400 naming each limit (by its field ``names``) outside what this server allows."""
        fields: dict[str, str] = {}
        if not 1 <= vcpus <= self.max_vcpus:
            fields[names[0]] = f"must be between 1 and {self.max_vcpus}"
        if not 64 <= memory_mb <= self.max_memory_mb:
            fields[names[1]] = f"must be between 64 and {self.max_memory_mb}"
        if not 64 <= disk_mb <= self.max_disk_mb:
            fields[names[2]] = f"must be between 64 and {self.max_disk_mb}"
        if fields:
            raise ValidationError.for_fields(fields)
