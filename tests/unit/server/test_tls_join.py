"""A host joining over TLS, end to end on real listeners: the control plane serves HTTPS
(``QBOX_TLS=auto``); an agent given the join command's ``--ca-hash`` checks it, sends its
certificate request with the join, serves HTTPS with what comes back, and the control
plane's client reaches it there. A wrong fingerprint stops the agent with the token unspent."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shlex
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from qbox.agent.app import create_app as create_agent_app
from qbox.agent.cluster_tls import CONTROL_PLANE_CA, ListenerCert, listener_names, serve_https, tls_dir
from qbox.agent.joined_host import take_part
from qbox.agent.joining import MembershipEnded
from qbox.agent.main import advertised_address
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from qbox.cli.serve import server_config
from qbox.server.app import Startup, create_app
from qbox.server.services.replica_tls import listener_tls
from qbox.server.settings import ServerSettings
from tests.unit.agent.interpreter_fixtures import CopyingFilesystem
from tests.unit.server.host_images import HostImageStore

T = TypeVar("T")


class LoopThread:
    """An event loop on a thread of its own, as another process would have."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def served(config: uvicorn.Config, sock: socket.socket) -> Iterator[LoopThread]:
    """``config``'s app on ``sock`` until the block ends; yields the loop it runs on."""
    loop = LoopThread()
    server = uvicorn.Server(config)
    serving = loop.submit(server.serve(sockets=[sock]))
    try:
        eventually(lambda: server.started or serving.done())
        assert server.started, serving.exception() if serving.done() else "not started"
        yield loop
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            serving.result(20)
        loop.close()
        sock.close()


def eventually(ready: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@dataclass
class Plane:
    url: str
    app: FastAPI
    loop: LoopThread
    admin: httpx.Client

    def join_command(self) -> list[str]:
        made = self.admin.post("/v1/host-tokens", json={})
        assert made.status_code == 201, made.text
        return shlex.split(made.json()["joinCommand"])


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    sock = free_socket()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    settings = ServerSettings(data_dir=tmp_path / "cp", tls="auto", tls_names="127.0.0.1",
                              public_url=url)
    tls = asyncio.run(listener_tls(settings))
    keys: list[str] = []
    app = create_app(settings, Startup(embedded_agent=False, run_sandbox_loops=False,
                                       on_first_admin=lambda admin: keys.append(admin.secret or '')))
    trust = ssl.create_default_context(cafile=settings.data_dir / "tls" / "ca.crt")
    with served(server_config(app, settings, tls=tls), sock) as loop, \
            httpx.Client(base_url=url, verify=trust, headers={"Authorization": f"Bearer {keys[0]}"}) as admin:
        yield Plane(url, app, loop, admin)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def agent_settings(data_dir: Path, sock: socket.socket, command: list[str], **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {"join_url": option(command, "--join"), "join_token": option(command, "--token"),
                              "ca_hash": option(command, "--ca-hash"), **overrides}
    return AgentSettings(data_dir=data_dir, runtime="fake", prepare_host=False,
                         listen=f"127.0.0.1:{sock.getsockname()[1]}", **values)


def test_a_host_joins_over_tls_and_is_reached_over_https(tmp_path: Path, plane: Plane) -> None:
    command = plane.join_command()
    sock = free_socket()
    settings = agent_settings(tmp_path / "agent", sock, command)
    address = advertised_address(settings)
    assert address == f"https://127.0.0.1:{sock.getsockname()[1]}"
    app = create_agent_app(settings, runtime=FakeRuntime(), store=HostImageStore(tmp_path / "images"),
                           filesystem=CopyingFilesystem())
    listener = ListenerCert(settings.data_dir, listener_names(address, settings.listen))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio",
                            timeout_graceful_shutdown=5)
    serve_https(config, listener)

    with served(config, sock) as agent_loop:
        member = agent_loop.submit(take_part(app, address, listener=listener))
        agents = plane.app.state.services.ctx.agents
        try:
            eventually(lambda: listener.signed or member.done())
            assert not member.done(), member.exception()
            (host,) = plane.admin.get("/v1/hosts").json()
            assert host["status"] == "ready" and host["address"] == address

            # The control plane's own client of the host: https, checked against the cluster CA.
            health = plane.loop.submit(agents.for_host(host["id"]).health()).result(20)
            assert health.runtime == "fake"
        finally:
            member.cancel()
            eventually(member.done)
            # Its pooled connections closed first: an idle TLS connection would hold the
            # agent's graceful shutdown until its timeout.
            for host_id in list(agents.clients):
                plane.loop.submit(agents.drop(host_id)).result(20)
    ca = plane.admin.get("/v1/cluster/ca").json()["certificatePem"]
    assert (tls_dir(settings.data_dir) / CONTROL_PLANE_CA).read_text() == ca


async def test_an_agent_told_another_fingerprint_stops_with_the_token_unspent(tmp_path: Path,
                                                                              plane: Plane) -> None:
    command = plane.join_command()
    settings = agent_settings(tmp_path / "agent", free_socket(), command, ca_hash="sha256:" + "0" * 64)
    app = create_agent_app(settings, runtime=FakeRuntime(), store=HostImageStore(tmp_path / "images"),
                           filesystem=CopyingFilesystem())
    async with app.router.lifespan_context(app):
        with pytest.raises(MembershipEnded, match="not trusting it"):
            await take_part(app, advertised_address(settings))
    (token,) = plane.admin.get("/v1/host-tokens").json()
    assert token["status"] == "active" and plane.admin.get("/v1/hosts").json() == []
