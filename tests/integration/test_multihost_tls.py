"""Hosts over TLS, for real: a replica serving HTTPS (QBOX_TLS=auto), an agent in a network
namespace of its own joining it with the join command's --ca-hash, and every data-plane call
(a template build, a spawn, an exec, a shell's WebSocket) going to the agent's https listener
with the certificate the cluster CA signed at its join. Nothing in the clear: the replica's
plain port answers no HTTP, and the agent's listener no plain HTTP either."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

from tests.multihost import AGENT_PORT, Cluster, cluster_network, wait_for
from tests.registry import BUSYBOX_REPO, registry_with_busybox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    database = tmp_path_factory.mktemp("tls-db") / "qbox.db"
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(cluster_network(f"sqlite:///{database}", replicas=1, tls=True))
        registry = stack.enter_context(registry_with_busybox(cluster.network_gateway()))
        cluster.env.update({"QBOX_REGISTRY": f"{registry}/qbox"})
        cluster.agent_env.update({"QBOX_REGISTRY": f"{registry}/qbox", "QBOX_INSECURE_REGISTRIES": registry,
                                  "QBOX_AGENT_RUNSC": "off"})
        cluster.start(hosts=1)
        cluster.registry = registry  # type: ignore[attr-defined]
        yield cluster


def test_the_host_joined_over_tls_with_a_certificate_for_its_address(cluster: Cluster) -> None:
    (agent,) = cluster.joined
    host = cluster.host(agent)
    assert host["address"] == f"https://{agent.address}:{AGENT_PORT}"
    tls = Path(agent.data_dir) / "tls"
    assert (tls / "control-plane-ca.pem").read_text() == cluster.ca_pem()
    assert (tls / "agent.key").stat().st_mode & 0o077 == 0
    certificate = x509.load_pem_x509_certificate((tls / "agent.crt").read_bytes())
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(cluster.ca_pem().encode()))
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host["id"]
    assert "--ca-hash sha256:" in agent_command_of(cluster)


def agent_command_of(cluster: Cluster) -> str:
    with cluster.api() as api:
        return str(api.post("/v1/host-tokens", json={}).json()["joinCommand"])


def test_build_spawn_exec_and_shell_go_over_https(cluster: Cluster) -> None:
    registry = cluster.registry  # type: ignore[attr-defined]
    with cluster.api() as api:
        made = api.post("/v1/templates", json={"name": "bb-tls", "imageRef": f"{registry}/{BUSYBOX_REPO}",
                                                "enableSsh": True})
        assert made.status_code == 201, made.text
        template_id = made.json()["id"]

        def built() -> dict[str, Any] | None:
            template: dict[str, Any] = api.get(f"/v1/templates/{template_id}").json()
            return template if template["status"] in ("ready", "failed") else None
        assert wait_for(built, "the template to build", timeout=300)["status"] == "ready"

        spawned = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                           json={"templateId": template_id, "vcpus": 1, "memoryMb": 128, "diskSizeMb": 256})
        assert spawned.status_code == 201, spawned.text
        sandbox_id = spawned.json()["id"]
        try:
            ran = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "sh", "args": ["-c", "echo over-tls"]})
            assert ran.status_code == 200 and ran.json()["stdout"] == "over-tls\n", ran.text
            assert "shell-42" in shell_output(cluster, sandbox_id, "echo shell-$((6*7))", until="shell-42")
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")


def shell_output(cluster: Cluster, sandbox_id: str, line: str, until: str) -> str:
    """What a shell (a WebSocket to the replica, relayed to the agent over wss) prints for
    ``line``, read until ``until`` shows or 30 s pass."""
    url = cluster.replicas[0].url.replace("https://", "wss://") + f"/v1/sandboxes/{sandbox_id}/shell"
    context = cluster.verify()
    assert isinstance(context, ssl.SSLContext)
    seen = ""
    with connect(url, ssl=context, additional_headers={"Authorization": f"Bearer {cluster.admin_key}"}) as ws:
        ws.send(json.dumps({"type": "input", "data": line + "\n"}))
        deadline = time.monotonic() + 30
        while until not in seen and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                message = ws.recv(timeout=1)
                seen += message.decode(errors="replace") if isinstance(message, bytes) else message
    return seen


def test_nothing_answers_in_the_clear(cluster: Cluster) -> None:
    (agent,) = cluster.joined
    plain_replica = cluster.replicas[0].url.replace("https://", "http://")
    for url in (f"{plain_replica}/healthz", f"http://{agent.address}:{AGENT_PORT}/internal/v1/health"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)
