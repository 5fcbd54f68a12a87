"""Serving the agent: uvicorn on a unix socket (mode 0600) or on host:port.

The socket is bound under a temporary name and renamed into place only once
the app has started (host prepared, runtime probed, sandboxes loaded): a
waiting ``qbox up`` sees the path appear when the agent can answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

import uvicorn

from qbox.agent.app import create_app
from qbox.agent.settings import AgentSettings

log = logging.getLogger("qbox.agent")


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


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


def run_agent(settings: AgentSettings) -> None:
    """Run the agent until SIGINT/SIGTERM (sandboxes keep running after it stops)."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The standard event loop, not uvloop: uvloop's pipe transports close their fd
    # twice (once in libuv, once through the file object; MagicStack/uvloop#763,
    # open as of uvloop 0.23). The agent's command pipes are such transports, and a
    # worker thread of the files API that opens a file between the two closes
    # loses its fd: seen here as EBADF (500s) in the files race test, and it could
    # as well make a write land in another file.
    with asyncio.Runner() as runner:
        runner.run(serve(settings))
