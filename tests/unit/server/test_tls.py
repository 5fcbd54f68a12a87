"""TLS both ways, on real listeners (uvicorn on 127.0.0.1):

- a control plane with ``QBOX_TLS=auto`` serves the certificate the cluster CA signed; a
  client trusting that CA reaches it, one that does not is refused before any request;
- an agent that joined serves the certificate the CA signed from its request, and the
  control plane's AgentClient (HTTP and shell WebSocket) reaches it only trusting that CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from qbox.agent.app import create_app as create_agent_app
from qbox.agent.cluster_tls import ListenerCert, serve_https
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from qbox.cli.serve import server_config
from qbox.core.errors import HostUnavailableError, SandboxNotFoundError
from qbox.protocol.shells import ShellQuery
from qbox.server.agent_client import AgentClient, AgentEndpoint
from qbox.server.app import Startup, create_app
from qbox.server.services.cluster_ca import ClusterCa, new_ca, sign_csr
from qbox.server.services.replica_tls import listener_tls
from qbox.server.settings import ServerSettings
from tests.unit.agent.interpreter_fixtures import CopyingFilesystem
from tests.unit.server.agent_host import SECRET, RunningAgent
from tests.unit.server.conftest import make_harness
from tests.unit.server.host_images import HostImageStore


@contextlib.contextmanager
def serving(config: uvicorn.Config) -> Iterator[int]:
    """``config``'s app served on a free port of 127.0.0.1 until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert server.started, "the server did not start"
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def trusting(ca_pem: str) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem)


# --- the control plane's listener ------------------------------------------------------


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[tuple[int, ServerSettings, list[str]]]:
    settings = ServerSettings(data_dir=tmp_path / "cp", agent_secret=SECRET, tls="auto",
                              tls_names="127.0.0.1,localhost")
    tls = asyncio.run(listener_tls(settings))
    assert tls is not None
    with RunningAgent(tmp_path / "agent") as agent:
        keys: list[str] = []
        startup = Startup(local_agent=agent.client(), run_sandbox_loops=False,
                          on_first_admin=lambda admin: keys.append(admin.secret or ''))
        with serving(server_config(create_app(settings, startup), settings, tls=tls)) as port:
            yield port, settings, keys


def test_a_control_plane_serving_the_ca_signed_certificate(
        control_plane: tuple[int, ServerSettings, list[str]]) -> None:
    port, settings, keys = control_plane
    tls_dir = settings.data_dir / "tls"
    assert (tls_dir / "server.key").stat().st_mode & 0o077 == 0
    ca_pem = (tls_dir / "ca.crt").read_text()
    base = f"https://127.0.0.1:{port}"

    with httpx.Client(verify=trusting(ca_pem)) as client:
        assert client.get(f"{base}/v1/system").status_code == 200
        # The CA's certificate, as the database holds it: public for agents, keyed for admins.
        public = client.get(f"{base}/v1/agent/ca").json()
        assert public["certificatePem"] == ca_pem and public["fingerprint"].startswith("sha256:")
        assert client.get(f"{base}/v1/cluster/ca").status_code == 401
        admin = client.get(f"{base}/v1/cluster/ca", headers={"Authorization": f"Bearer {keys[0]}"})
        assert admin.status_code == 200 and admin.json() == public
    # Also by name: the certificate is for every name of QBOX_TLS_NAMES.
    with httpx.Client(verify=trusting(ca_pem)) as client:
        assert client.get(f"https://localhost:{port}/v1/system").status_code == 200

    for verify in (True, trusting(new_ca().cert_pem)):  # the system's roots; another CA
        with httpx.Client(verify=verify) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
            client.get(f"{base}/v1/system")


async def test_a_replica_restarting_keeps_the_ca_and_gets_a_new_certificate(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, tls="auto", tls_names="127.0.0.1")
    first = await listener_tls(settings)
    assert first is not None
    ca_pem, cert_pem = (tmp_path / "tls" / "ca.crt").read_text(), first.certfile.read_text()
    again = await listener_tls(settings)
    assert again is not None
    assert (tmp_path / "tls" / "ca.crt").read_text() == ca_pem
    assert again.certfile.read_text() != cert_pem


@pytest.mark.parametrize(("given", "refused"), [
    ({"tls": "auto", "tls_names": "*.example.com"}, r"\*\.example\.com"),
    ({"tls_cert": "/some/cert.pem"}, "QBOX_TLS_KEY"),
])
async def test_listener_settings_that_do_not_fit_are_refused(tmp_path: Path, given: dict[str, Any],
                                                             refused: str) -> None:
    with pytest.raises(ValueError, match=refused):
        await listener_tls(ServerSettings(data_dir=tmp_path, **given))
    assert not (tmp_path / "tls").exists()


async def test_plain_http_and_an_operators_own_certificate(tmp_path: Path) -> None:
    assert await listener_tls(ServerSettings(data_dir=tmp_path)) is None
    own = await listener_tls(ServerSettings(data_dir=tmp_path, tls="auto", tls_cert=tmp_path / "c.pem",
                                            tls_key=tmp_path / "k.pem"))
    assert own is not None and own.certfile == tmp_path / "c.pem" and own.keyfile == tmp_path / "k.pem"


# --- an agent's listener, dialled by the control plane ---------------------------------


@pytest.fixture
def agent_listener(tmp_path: Path) -> Iterator[tuple[int, ListenerCert]]:
    """An agent app (fake runtime) serving HTTPS with its listener's live context."""
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False)
    app = create_agent_app(settings, runtime=FakeRuntime(), store=HostImageStore(tmp_path / "images"),
                           filesystem=CopyingFilesystem())
    listener = ListenerCert(settings.data_dir, ["127.0.0.1"])
    config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio")
    serve_https(config, listener)
    with serving(config) as port:
        yield port, listener


async def test_the_control_plane_reaches_a_joined_agent_over_https_trusting_the_cluster_ca(
        agent_listener: tuple[int, ListenerCert]) -> None:
    port, listener = agent_listener
    ca: ClusterCa = new_ca()
    address = f"https://127.0.0.1:{port}"

    async def reach(ca_pem: str) -> None:
        client = AgentClient(AgentEndpoint(address, SECRET, ca_pem=ca_pem))
        try:
            await client.health()
            # The shell WebSocket (wss://) goes through the same check; the agent's own
            # answer (no such sandbox) shows the connection was made.
            with pytest.raises(SandboxNotFoundError):
                await client.shells.open("sb_missing", ShellQuery())
        finally:
            await client.aclose()

    # Before the join answered: the stand-in certificate is the CA's to no one.
    assert not listener.signed
    with pytest.raises(HostUnavailableError, match="CERTIFICATE_VERIFY"):
        await reach(ca.cert_pem)

    listener.install(sign_csr(ca, listener.request(), "host_tls"), ca.cert_pem)
    assert listener.signed and (listener.dir / "agent.key").stat().st_mode & 0o077 == 0
    await reach(ca.cert_pem)  # no restart: the next connection has the new certificate

    with pytest.raises(HostUnavailableError, match="CERTIFICATE_VERIFY"):
        await reach(new_ca().cert_pem)
    shell = AgentClient(AgentEndpoint(address, SECRET, ca_pem=new_ca().cert_pem))
    with pytest.raises(HostUnavailableError):
        await shell.shells.open("sb_missing", ShellQuery())
    await shell.aclose()


# --- the join command ------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["auto", "off"])
def test_the_join_command_pins_the_ca_when_replicas_serve_its_certificates(tmp_path: Path, tls: str) -> None:
    harnesses = make_harness(tmp_path, database=None, tls=tls, public_url="https://qbox.example.com")
    with contextlib.closing(harnesses):
        h = next(harnesses)
        made = h.client.post("/v1/host-tokens", json={}, headers=h.auth())
        assert made.status_code == 201, made.text
        command = made.json()["joinCommand"]
        fingerprint = h.client.get("/v1/agent/ca").json()["fingerprint"]
        assert command.startswith("qbox agent --join https://qbox.example.com --token ")
        assert command.endswith(f" --ca-hash {fingerprint}") == (tls == "auto"), command
