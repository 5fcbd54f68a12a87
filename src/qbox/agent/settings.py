"""The host agent's settings: where it keeps state, which runtime it drives, how it listens.

A plain dataclass built by the CLI (or a test) and passed in; nothing is read
from the environment unless ``from_env`` is called.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from qbox.agent.host_names import DEFAULT_DATA_DIR, HostNames
from qbox.agent.images.refs import parse_insecure_registries
from qbox.core.image_refs import ImageRefPolicy, local_path

SECRET_FILE = "agent-secret"
RUNTIME_CHOICES = ("auto", "crun", "runc", "fake")
# The default cap on sandboxes per host, below what a /16 pool allows: past about a thousand,
# a host runs short of something else first (veths and netns, mounts, pids, watcher tasks),
# so going higher is an operator's deliberate choice (QBOX_AGENT_MAX_SANDBOXES).
MAX_SANDBOXES_CAP = 1000
# Each sandbox takes one /30 of the address pool (network/addresses.py, which imports this
# module: hence the number here).
_SANDBOX_LINK_PREFIX = 30


@dataclass(frozen=True)
class AgentSettings:
    data_dir: Path = DEFAULT_DATA_DIR
    # The host secret the control plane presents; None → DATA_DIR/agent-secret
    # (created on first start).
    secret: str | None = None
    # Where to listen: a unix socket path (default DATA_DIR/agent.sock), or
    # ``listen="host:port"`` for TCP, which wins when both are set.
    socket_path: Path | None = None
    listen: str | None = None
    runtime: str = "auto"
    # Also offer gVisor (a sandbox's spec asks for "runsc") when runsc is installed and works.
    runsc: bool = True
    # catatonit, bind-mounted read-only as every sandbox's PID 1.
    init_path: Path = Path("/usr/bin/catatonit")
    pids_limit: int = 4096
    max_finished_processes: int = 1000
    # Per stream of each command; past it the output ends with a marker line.
    output_cap_bytes: int = 16 * 1024 * 1024
    # How long a killed command's tree has to end before what is left gets SIGKILL.
    kill_grace_seconds: float = 5.0
    # An image gc spares images imported or committed this recently (ImageStore.gc).
    image_gc_grace_seconds: float = 60.0
    # Host preparation (cgroup fix-up) mutates the machine; tests turn it off.
    prepare_host: bool = True
    log_level: str = "info"
    # --- networking (docs/operations.md, "Networking") ---
    # False → every sandbox gets an empty namespace (loopback only), no firewall.
    network: bool = True
    # Sandbox addresses, one /30 link per sandbox (16384 sandboxes in a /16); "" → the data
    # dir's own (host_names.py: 10.213.0.0/16 for the default dir, else a /20 of 10.208/12).
    network_pool: str = ""
    # Upstream DNS servers for sandboxes; empty → the host's (loopback stubs skipped).
    network_dns: tuple[str, ...] = ()
    # More destinations sandboxes may never reach (e.g. a remote control plane's address).
    network_blocked: tuple[str, ...] = ()
    # Registries reached without TLS verification besides loopback ones (host[:port]).
    insecure_registries: tuple[str, ...] = ()
    # What a template build may pull (core/image_refs.py; the control plane checked first):
    # registries that may be on internal addresses (host[:port]; QBOX_REGISTRY is one too),
    # and the directories local sources must be in (the base-image cache always is).
    trusted_registries: tuple[str, ...] = ()
    import_dirs: tuple[str, ...] = ()
    # --- isolation (docs/isolation.md) ---
    # Ids 0–65535 in a sandbox are host ids userns_base–userns_base+65535;
    # None → no user namespace (root in a sandbox is the host's root: tests only).
    userns_base: int | None = 100_000
    # The disk quota of a sandbox's writable layer when the spawn names none;
    # disk_quota=False → the layer sits on the host's filesystem, unlimited.
    default_disk_mb: int = 2048
    disk_quota: bool = True
    # The seccomp allowlist (seccomp.py) on every sandbox process.
    seccomp: bool = True
    # --- joining a control plane (docs/operations.md, "Run on many hosts") ---
    # ``qbox agent --join URL --token TOKEN``: the control plane to join and heartbeat; the
    # token is used once and never kept (nor shown in a repr that may be logged).
    join_url: str | None = None
    join_token: str | None = field(default=None, repr=False)
    # What the control plane's certificate must chain to when it is reached over https: a
    # PEM file, or the cluster CA's pinned fingerprint (sha256:…); neither: the system's
    # roots (agent/cluster_tls.py).
    ca_cert: Path | None = None
    ca_hash: str | None = None
    # The URL the control plane dials for data-plane calls; None → http(s)://<listen>, https
    # when the control plane is reached over https.
    advertise: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # Built-in templates this machine's base image can be built into (name -> image ref),
    # offered to the control plane in every report (set by `qbox agent --join`).
    builtin_images: dict[str, str] = field(default_factory=dict)
    # Until the control plane's first answer says otherwise.
    heartbeat_seconds: float = 5.0
    # None → what the address pool allows, at most MAX_SANDBOXES_CAP.
    max_sandboxes: int | None = None

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}")
        # Runtimes and mount options need absolute paths (crun resolves
        # relative ones against its own cwd).
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        if not self.network_pool:
            object.__setattr__(self, "network_pool",
                               HostNames.for_data_dir(self.data_dir).default_pool)
        if self.heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds must be positive")
        if self.max_sandboxes is not None and self.max_sandboxes < 1:
            raise ValueError("max_sandboxes must be at least 1")

    @property
    def sandbox_limit(self) -> int:
        """How many sandboxes this host takes at most (reported to the control plane)."""
        if self.max_sandboxes is not None:
            return self.max_sandboxes
        if not self.network:
            return MAX_SANDBOXES_CAP
        prefix: int = ipaddress.ip_network(self.network_pool).prefixlen
        links = 1 << max(_SANDBOX_LINK_PREFIX - prefix, 0)
        return min(links, MAX_SANDBOXES_CAP)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    def build_ref_policy(self, base_images_dir: Path) -> ImageRefPolicy:
        """What a template build may pull: the import dirs and ``base_images_dir`` (the
        built-in images), never this agent's own data dir; internal registries if trusted."""
        return ImageRefPolicy.from_settings(self.trusted_registries, [*self.import_dirs, str(base_images_dir)],
                                            forbidden_dirs=[str(self.data_dir)])

    def refuse_own_state(self, ref: str) -> None:
        """ValidationError for a local source in this agent's data dir: its own store is nobody's
        image source (built-ins come from wherever the operator put them, else)."""
        if local_path(ref) is not None:
            ImageRefPolicy.from_settings(None, "/", forbidden_dirs=[str(self.data_dir)]).check(
                ref, local_allowed=True, realpath=os.path.realpath)

    @property
    def sandboxes_dir(self) -> Path:
        return self.data_dir / "sandboxes"

    @property
    def disks_dir(self) -> Path:
        """Golden ext4 images that sandbox disks are cloned from (disk.py)."""
        return self.data_dir / "disks"

    @property
    def network_dir(self) -> Path:
        return self.data_dir / "network"

    @property
    def runtime_root(self) -> Path:
        return self.data_dir / "runtime"

    @property
    def effective_socket_path(self) -> Path | None:
        if self.listen:
            return None
        return self.socket_path or self.data_dir / "agent.sock"

    @classmethod
    def from_env(cls, **overrides: object) -> AgentSettings:
        """Settings from ``QBOX_DATA_DIR``, ``QBOX_AGENT_RUNTIME``, ``QBOX_AGENT_SECRET``,
        ``QBOX_AGENT_LISTEN``, ``QBOX_AGENT_RUNSC`` (``off``), ``QBOX_NETWORK`` (``off``),
        ``QBOX_NETWORK_POOL``,
        ``QBOX_NETWORK_DNS`` and ``QBOX_NETWORK_BLOCKED`` (comma-separated),
        ``QBOX_AGENT_OUTPUT_CAP`` (bytes, or with a K/M/G suffix) and
        ``QBOX_AGENT_KILL_GRACE`` and ``QBOX_IMAGE_GC_GRACE_SECONDS`` (seconds) and
        ``QBOX_INSECURE_REGISTRIES``, ``QBOX_TRUSTED_REGISTRIES`` and ``QBOX_IMPORT_DIRS``
        (comma-separated) and ``QBOX_REGISTRY`` (trusted), ``QBOX_JOIN_URL``,
        ``QBOX_JOIN_TOKEN``, ``QBOX_JOIN_CA_CERT``, ``QBOX_JOIN_CA_HASH``,
        ``QBOX_AGENT_ADVERTISE``, ``QBOX_HOST_LABELS`` (``k=v,k2=v2``),
        ``QBOX_HOST_HEARTBEAT_SECONDS`` and ``QBOX_AGENT_MAX_SANDBOXES``; keyword arguments
        win."""
        values: dict[str, object] = {}
        if os.environ.get("QBOX_DATA_DIR"):
            values["data_dir"] = Path(os.environ["QBOX_DATA_DIR"])
        if os.environ.get("QBOX_AGENT_RUNTIME"):
            values["runtime"] = os.environ["QBOX_AGENT_RUNTIME"]
        if os.environ.get("QBOX_AGENT_SECRET"):
            values["secret"] = os.environ["QBOX_AGENT_SECRET"]
        if os.environ.get("QBOX_AGENT_LISTEN"):
            values["listen"] = os.environ["QBOX_AGENT_LISTEN"]
        if os.environ.get("QBOX_AGENT_RUNSC"):
            values["runsc"] = os.environ["QBOX_AGENT_RUNSC"].lower() not in ("off", "0", "false")
        if os.environ.get("QBOX_NETWORK"):
            values["network"] = os.environ["QBOX_NETWORK"].lower() not in ("off", "0", "false")
        if os.environ.get("QBOX_NETWORK_POOL"):
            values["network_pool"] = os.environ["QBOX_NETWORK_POOL"]
        for name in ("dns", "blocked"):
            listed = os.environ.get(f"QBOX_NETWORK_{name.upper()}", "")
            if listed.strip():
                values[f"network_{name}"] = tuple(x.strip() for x in listed.split(",") if x.strip())
        if os.environ.get("QBOX_AGENT_OUTPUT_CAP"):
            values["output_cap_bytes"] = parse_size(os.environ["QBOX_AGENT_OUTPUT_CAP"])
        if os.environ.get("QBOX_AGENT_KILL_GRACE"):
            values["kill_grace_seconds"] = float(os.environ["QBOX_AGENT_KILL_GRACE"])
        if os.environ.get("QBOX_INSECURE_REGISTRIES"):
            values["insecure_registries"] = tuple(sorted(
                parse_insecure_registries(os.environ["QBOX_INSECURE_REGISTRIES"])))
        trusted = [*_listed("QBOX_TRUSTED_REGISTRIES"), *_listed("QBOX_REGISTRY")[:1]]
        if trusted:
            values["trusted_registries"] = tuple(trusted)
        if _listed("QBOX_IMPORT_DIRS"):
            values["import_dirs"] = tuple(_listed("QBOX_IMPORT_DIRS"))
        if os.environ.get("QBOX_IMAGE_GC_GRACE_SECONDS"):
            values["image_gc_grace_seconds"] = float(os.environ["QBOX_IMAGE_GC_GRACE_SECONDS"])
        for name, key in (("QBOX_JOIN_URL", "join_url"), ("QBOX_JOIN_TOKEN", "join_token"),
                          ("QBOX_AGENT_ADVERTISE", "advertise"), ("QBOX_JOIN_CA_HASH", "ca_hash")):
            if os.environ.get(name):
                values[key] = os.environ[name]
        if os.environ.get("QBOX_JOIN_CA_CERT"):
            values["ca_cert"] = Path(os.environ["QBOX_JOIN_CA_CERT"])
        if _listed("QBOX_HOST_LABELS"):
            values["labels"] = parse_labels(_listed("QBOX_HOST_LABELS"))
        if os.environ.get("QBOX_HOST_HEARTBEAT_SECONDS"):
            values["heartbeat_seconds"] = float(os.environ["QBOX_HOST_HEARTBEAT_SECONDS"])
        if os.environ.get("QBOX_AGENT_MAX_SANDBOXES"):
            values["max_sandboxes"] = int(os.environ["QBOX_AGENT_MAX_SANDBOXES"])
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _listed(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def parse_labels(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["gpu=true", "zone=a"]`` → ``{"gpu": "true", "zone": "a"}`` (a host's labels)."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a label is KEY=VALUE, not {pair!r}")
        labels[key.strip()] = value.strip()
    return labels


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """``16777216``, ``512K``, ``16M``, ``1G`` (also ``16MiB``/``16MB``: binary units) → bytes."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in "KMG" and raw else (raw, "")
    try:
        size = int(number) * _SIZE_UNITS[unit]
    except ValueError:
        raise ValueError(f"not a size in bytes: {text!r} (e.g. 16M)") from None
    if size <= 0:
        raise ValueError(f"a size must be positive: {text!r}")
    return size


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, readable by its owner only (0600 from birth)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AgentSecret:
    """The secret the control plane presents on every call. Joining a control plane
    replaces it (``JoinReply.agentSecret``), so the bearer check reads it at each call."""

    def __init__(self, data_dir: Path, value: str) -> None:
        self._path = data_dir / SECRET_FILE
        self._value = value.encode()

    @property
    def value(self) -> bytes:
        return self._value

    def replace(self, value: str) -> None:
        """Take ``value`` from now on, and after a restart (DATA_DIR/agent-secret)."""
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self._path, value + "\n")
        self._value = value.encode()


def load_or_create_secret(data_dir: Path) -> str:
    """The host secret from ``DATA_DIR/agent-secret``, generated (mode 0600) on first use."""
    path = data_dir / SECRET_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(32)
    # O_EXCL: if another process raced us here, its secret is the one to keep.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
