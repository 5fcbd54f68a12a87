"""A preview of a sandbox on another host: two replicas on PostgreSQL, two joined hosts, each in a
network namespace of its own (tests/multihost.py); the preview is asked of either replica, which
relays through the agent of the host the sandbox runs on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import postgres
from tests.integration.test_multihost import base_template, spawned_on
from tests.multihost import Cluster, cluster_network
from tests.registry import registry_with_busybox

pytestmark = pytest.mark.integration

PORT = 8000


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres.running_cluster())
        cluster = stack.enter_context(cluster_network(stack.enter_context(pg.database())))
        registry = stack.enter_context(registry_with_busybox(cluster.network_gateway()))
        cluster.env.update({"QBOX_REGISTRY": f"{registry}/qbox",
                            "QBOX_RATE_LIMIT_SPAWNS_PER_SECOND": "0",
                            "QBOX_RATE_LIMIT_REQUESTS_PER_SECOND": "0"})
        cluster.agent_env.update({"QBOX_REGISTRY": f"{registry}/qbox",
                                  "QBOX_INSECURE_REGISTRIES": registry, "QBOX_AGENT_RUNSC": "off"})
        cluster.start(hosts=2)
        base_template(cluster, registry)
        yield cluster


def serve(api: httpx.Client, sandbox_id: str, visibility: str) -> None:
    """busybox httpd on PORT inside the sandbox, serving a page that names the sandbox."""
    r = api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": "/tmp/www/index.html"},
                content=f"served by {sandbox_id}".encode())
    assert r.status_code == 204, r.text
    r = api.post(f"/v1/sandboxes/{sandbox_id}/commands", json={
        "cmd": "/bin/busybox", "args": ["httpd", "-f", "-p", str(PORT), "-h", "/tmp/www"]})
    assert r.status_code == 201, r.text
    r = api.post(f"/v1/sandboxes/{sandbox_id}/ports", json={"port": PORT, "visibility": visibility})
    assert r.status_code in (200, 201), r.text
    deadline = time.monotonic() + 30
    while not api.post(f"/v1/sandboxes/{sandbox_id}/ports/{PORT}/probe").json().get("reachable"):
        assert time.monotonic() < deadline, "httpd never listened"
        time.sleep(0.2)


def visit(cluster: Cluster, replica: int, sandbox_id: str, **headers: str) -> httpx.Response:
    url = cluster.replicas[replica].url
    host = f"{PORT}-{sandbox_id}.localhost:{url.rsplit(':', 1)[1]}"
    return httpx.get(f"{url}/index.html", headers={"host": host, **headers}, timeout=30)


def test_a_sandbox_on_a_second_host_is_reached_through_either_replica(cluster: Cluster) -> None:
    second = cluster.joined[1]
    sandbox: dict[str, Any] = spawned_on(cluster, second, templateId="tpl_bb", vcpus=1, memoryMb=128,
                                         diskSizeMb=256)
    try:
        with cluster.api() as api:
            serve(api, sandbox["id"], "private")
        for replica in (0, 1):
            r = visit(cluster, replica, sandbox["id"], authorization=f"Bearer {cluster.admin_key}")
            assert r.status_code == 200 and r.text == f"served by {sandbox['id']}", r.text
            assert visit(cluster, replica, sandbox["id"]).status_code == 401
    finally:
        with cluster.api() as api:
            api.delete(f"/v1/sandboxes/{sandbox['id']}")
