"""Serving the agent: uvicorn on a unix socket (mode 0600) or on host:port.

The socket is bound under a temporary name and renamed into place only once
the app has started (host prepared, runtime probed, sandboxes loaded): a
waiting ``qbox up`` sees the path appear when the agent can answer. An agent
that joins a control plane (``--join``, or a host.json from an earlier join)
serves on TCP and, once it serves, joins and heartbeats (joined_host.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from qbox.agent.app import create_app
from qbox.agent.joined_host import take_part
from qbox.agent.cluster_tls import ListenerCert, listener_names, serve_https
from qbox.agent.joining import HOST_FILE, MembershipEnded, control_plane_url
from qbox.agent.settings import AgentSettings

log = logging.getLogger("qbox.agent")


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def joins(settings: AgentSettings) -> bool:
    """Whether this agent is a member of a control plane it dials (not ``qbox up``'s own)."""
    return bool(settings.join_url) or (settings.data_dir / HOST_FILE).exists()


def advertised_address(settings: AgentSettings) -> str:
    """The URL the control plane dials for data-plane calls: ``--advertise``, else the
    ``--listen`` address, which must then be one address (not 0.0.0.0 or ::, which a
    control plane cannot dial: the agent refuses rather than guess an interface). Its
    scheme is the control plane's: an agent reached over https serves HTTPS itself."""
    if settings.advertise:
        return settings.advertise.rstrip("/")
    host, port = parse_listen(settings.listen or "")
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name: the control plane resolves it
        unspecified = False
    if unspecified:
        raise ValueError(f"--listen {settings.listen} is every address of this host; give "
                         "--advertise http://ADDR:PORT, the address the control plane "
                         "reaches this agent at")
    scheme = "https" if (control_plane_url(settings) or "").startswith("https://") else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def bind_unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is born 0600: no window where others can connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(settings: AgentSettings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(app, log_level=settings.log_level, lifespan="on",
                            access_log=False, timeout_graceful_shutdown=5)
    if settings.listen:
        config.host, config.port = parse_listen(settings.listen)
        if joins(settings):
            address = advertised_address(settings)
            listener = None
            if address.startswith("https://"):
                listener = ListenerCert(settings.data_dir, listener_names(address, settings.listen))
                serve_https(config, listener)
            await _serve_joined(uvicorn.Server(config), app, address, listener)
        else:
            await uvicorn.Server(config).serve()
        return
    final = settings.effective_socket_path
    assert final is not None
    staging = final.with_name(final.name + ".starting")
    sock = bind_unix_socket(staging)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            os.replace(staging, final)
            log.info("agent listening on %s", final)
        await task
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        if server.started:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()
        sock.close()


async def _serve_joined(server: uvicorn.Server, app: FastAPI, address: str,
                        listener: ListenerCert | None) -> None:
    """Serve, and once serving take part in the control plane; a refusal stops both."""
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if not server.started:
        await serving
        return
    member = asyncio.create_task(take_part(app, address, listener=listener))
    await asyncio.wait({serving, member}, return_when=asyncio.FIRST_COMPLETED)
    if member.done():
        server.should_exit = True
        await serving
        member.result()  # MembershipEnded (or a bug) ends the agent, non-zero
        return
    member.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await member
    await serving


def run_agent(settings: AgentSettings) -> None:
    """Run the agent until SIGINT/SIGTERM (sandboxes keep running after it stops)."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs each request at INFO: a line per heartbeat says nothing the agent's own don't.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The standard event loop, not uvloop: uvloop's pipe transports close their fd
    # twice (once in libuv, once through the file object; MagicStack/uvloop#763,
    # open as of uvloop 0.23). The agent's command pipes are such transports, and a
    # worker thread of the files API that opens a file between the two closes
    # loses its fd: seen here as EBADF (500s) in the files race test, and it could
    # as well make a write land in another file.
    if joins(settings):
        try:
            if settings.listen is None:
                raise ValueError("an agent that joins a control plane serves on TCP: "
                                 "give --listen ADDR:PORT")
            advertised_address(settings)
        except ValueError as exc:
            raise SystemExit(f"qbox agent: {exc}") from None
    try:
        with asyncio.Runner() as runner:
            runner.run(serve(settings))
    except MembershipEnded as exc:
        raise SystemExit(f"qbox agent: {exc}") from None
