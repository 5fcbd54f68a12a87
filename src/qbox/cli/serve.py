"""``qbox up``, ``qbox server`` and ``qbox agent``: running qbox itself.

These need the ``server`` extra; the CLI loads this module lazily so SDK-only
installs never import FastAPI.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import click
import uvicorn

from qbox.server.app import Startup, create_app
from qbox.server.http.server_protocol import http_protocol
from qbox.agent.settings import AgentSettings, load_or_create_secret
from qbox.server.services.bootstrap import ADMIN_EMAIL, AdminBootstrap
from qbox.server.services.replica_tls import ListenerTls, listener_tls
from qbox.server.settings import ServerSettings, default_data_dir

BUILTIN_PYTHON = "python"
BUILTIN_PYTHON_GVISOR = "python-gvisor"
_PR_SET_PDEATHSIG = 1


class _Server(uvicorn.Server):
    """uvicorn re-raises the stopping signal after a graceful shutdown (a traceback on
    every Ctrl-C); qbox has finished cleanly by then and exits 0 instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def server_config(app: object, settings: ServerSettings, log_level: str = "warning",
                  tls: ListenerTls | None = None) -> uvicorn.Config:
    # uvicorn refuses larger shell messages itself (close 1009), before they are buffered whole.
    # The standard event loop, not uvloop, whose pipe transports close their fd twice
    # (MagicStack/uvloop#763; see agent/main.py): caught here closing a number another
    # thread had just been given. The HTTP protocol answers what it refuses itself (a
    # malformed or oversized head) with the error envelope too (server/http/server_protocol.py).
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,  # type: ignore[arg-type]
                          timeout_graceful_shutdown=5, ws_max_size=settings.shell_max_message_bytes,
                          loop="asyncio", http=http_protocol(settings.max_header_bytes),
                          ssl_certfile=tls.certfile if tls else None, ssl_keyfile=tls.keyfile if tls else None)


def _serve(app: object, settings: ServerSettings, log_level: str, tls: ListenerTls | None) -> None:
    _Server(server_config(app, settings, log_level, tls)).run()


def _listener_tls(settings: ServerSettings) -> ListenerTls | None:
    """What the listener serves HTTPS with (QBOX_TLS, QBOX_TLS_CERT/KEY); None: plain HTTP."""
    try:
        return asyncio.run(listener_tls(settings))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _echo(line: str) -> None:
    click.echo(f"qbox: {line}", err=True)


def _local_url(host: str, port: int, https: bool = False) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    return f"{'https' if https else 'http'}://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}"


def _announce_admin(admin: AdminBootstrap, base_url: str) -> None:
    """The first admin's key and password, printed this once (each is also in its 0600 file)."""
    click.echo("")
    click.echo(f"  qbox admin API key (shown once; also saved to {admin.key_file}):")
    click.echo("")
    click.echo(f"    {admin.secret}")
    click.echo("")
    click.echo(f"  export QBOX_BASE_URL={base_url} QBOX_API_KEY=$(cat {admin.key_file})")
    click.echo("")
    click.echo(f"  dashboard: {base_url}/login")
    click.echo(f"  log in as {ADMIN_EMAIL} with this password (shown once; also saved to {admin.password_file}):")
    click.echo("")
    click.echo(f"    {admin.password}")
    click.echo("")
    click.echo("  change it with: qbox users set-password " + ADMIN_EMAIL)
    click.echo("")


def _die_with_parent() -> None:
    # The agent must not outlive `qbox up`, even when it is SIGKILLed.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _start_agent(data_dir: Path, socket_path: Path) -> subprocess.Popen[bytes]:
    socket_path.unlink(missing_ok=True)
    # Its own session: a Ctrl-C at the terminal reaches `qbox up` only, which
    # then stops the agent itself, after the control plane has shut down.
    return subprocess.Popen(
        [sys.executable, "-m", "qbox", "agent", "--data-dir", str(data_dir), "--socket", str(socket_path)],
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_socket(path: Path, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            raise click.ClickException(f"the host agent exited during start (status {process.returncode})")
        if time.monotonic() > deadline:
            raise click.ClickException("the host agent did not start listening in time")
        time.sleep(0.05)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory [default: /var/lib/qbox as root, else ~/.local/share/qbox].",
)
def up(host: str, port: int, data_dir: Path | None) -> None:
    """Run qbox on this machine: the control plane and one host agent."""
    if os.geteuid() != 0:
        raise click.ClickException("qbox up runs sandboxes with crun and must run as root")
    from qbox.agent.images.base_image import ensure_base_image, machine_cache_dir

    data_dir = (data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path = data_dir / "agent.sock"
    agent_secret = load_or_create_secret(data_dir)

    _echo(f"data dir {data_dir}")
    base_ref = asyncio.run(ensure_base_image(machine_cache_dir(), on_progress=_echo))

    builtin = {BUILTIN_PYTHON: base_ref}
    if shutil.which("runsc"):
        # The same image under gVisor: stronger isolation, slower spawn (docs/isolation.md).
        builtin[BUILTIN_PYTHON_GVISOR] = base_ref
    agent = _start_agent(data_dir, socket_path)
    try:
        _wait_for_socket(socket_path, agent)
        settings = ServerSettings(
            data_dir=data_dir, host=host, port=port, agent_address=str(socket_path), agent_secret=agent_secret
        )
        tls = _listener_tls(settings)
        base_url = _local_url(host, port, https=tls is not None)
        startup = Startup(
            builtin_templates=builtin,
            builtin_runtimes={BUILTIN_PYTHON_GVISOR: "runsc"},
            on_progress=_echo,
            on_first_admin=lambda admin: _announce_admin(admin, base_url),
        )
        _echo(f"control plane on {base_url}")
        _serve(create_app(settings, startup), settings, "warning", tls)
    finally:
        _echo("stopping the host agent")
        _stop(agent)
        _echo("stopped; sandboxes keep running and are found again by the next qbox up")


@click.command()
@click.option("--host", default=None, help="Address to listen on [QBOX_HOST].")
@click.option("--port", default=None, type=int, help="Port [QBOX_PORT].")
def server(host: str | None, port: int | None) -> None:
    """Run a control-plane replica (settings from QBOX_*; hosts join with tokens).

    The first replica on an empty database creates the first admin and prints its key,
    its dashboard password and the login URL once; later ones, and replicas started at
    the same moment, find it (docs/operations.md).
    """
    settings = ServerSettings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    tls = _listener_tls(settings)
    base_url = settings.public_url or _local_url(settings.host, settings.port, https=tls is not None)
    # An agent named by QBOX_AGENT_ADDRESS is this replica's embedded host; else hosts join.
    startup = Startup(on_first_admin=lambda admin: _announce_admin(admin, base_url),
                      embedded_agent=settings.agent_address is not None)
    _serve(create_app(settings, startup), settings, "info", tls)


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Unix socket to serve on [default: DATA_DIR/agent.sock].",
)
@click.option("--listen", default=None, help="host:port to serve on instead of a unix socket.")
@click.option("--join", "join_url", default=None, metavar="URL",
              help="Join the control plane at URL and heartbeat to it [QBOX_JOIN_URL].")
@click.option("--token", "join_token", default=None,
              help="Join token (qbox hosts token create), used once [QBOX_JOIN_TOKEN].")
@click.option("--advertise", default=None, metavar="URL",
              help="URL the control plane dials this agent at [default: http://LISTEN, "
                   "https://LISTEN when --join is https; QBOX_AGENT_ADVERTISE].")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label of this host, repeatable [QBOX_HOST_LABELS=k=v,k2=v2].")
@click.option("--ca-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="PEM file of the CA the control plane's certificate must chain to "
                   "[QBOX_JOIN_CA_CERT].")
@click.option("--ca-hash", default=None, metavar="sha256:HEX",
              help="Trust the cluster CA with this fingerprint, as the join command says "
                   "[QBOX_JOIN_CA_HASH].")
def agent(data_dir: Path | None, socket_path: Path | None, listen: str | None,
          join_url: str | None, join_token: str | None, advertise: str | None,
          labels: tuple[str, ...], ca_cert: Path | None, ca_hash: str | None) -> None:
    """Run the host agent (started by qbox up, or joining a control plane with --join)."""
    from qbox.agent.main import run_agent
    from qbox.agent.settings import parse_labels
    from qbox.core.cert_fingerprint import parse_fingerprint

    data_dir = (data_dir or default_data_dir()).resolve()
    overrides: dict[str, object] = {"data_dir": data_dir, "secret": load_or_create_secret(data_dir)}
    if listen:
        overrides["listen"] = listen
    elif socket_path:
        overrides["socket_path"] = socket_path
    for key, value in (("join_url", join_url), ("join_token", join_token), ("advertise", advertise),
                       ("ca_cert", ca_cert)):
        if value:
            overrides[key] = value
    try:
        if ca_hash:
            overrides["ca_hash"] = parse_fingerprint(ca_hash)
        if labels:
            overrides["labels"] = parse_labels(labels)
        # QBOX_AGENT_RUNTIME=crun|runc picks the runtime; the rest comes from the options.
        settings = AgentSettings.from_env(**overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if _offers_builtins(settings):
        settings = dataclasses.replace(settings, builtin_images=_builtin_images())
    run_agent(settings)


def _offers_builtins(settings: AgentSettings) -> bool:
    """A joined agent offers this machine's base image as the built-in templates' source
    (a fleet with no embedded agent gets them so); QBOX_AGENT_BUILTINS=off opts out."""
    joined = settings.join_url is not None or (settings.data_dir / "host.json").exists()
    wanted = os.environ.get("QBOX_AGENT_BUILTINS", "on").lower() not in ("off", "0", "false")
    return joined and wanted and settings.runtime != "fake"


def _builtin_images() -> dict[str, str]:
    from qbox.agent.images.base_image import ensure_base_image, machine_cache_dir

    return {BUILTIN_PYTHON: asyncio.run(ensure_base_image(machine_cache_dir(), on_progress=_echo))}
