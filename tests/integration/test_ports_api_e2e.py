"""The ports API against a real ``qbox up`` and a crun sandbox: a spawn with ports (what
``qbox sandboxes create python -p 8000`` sends) routes as soon as the sandbox runs, the probe says
false until ``python3 -m http.server`` listens and true after, and our SDK's ``expose_and_wait``
waits for a server that starts late."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qbox import PortNotReachableError, Sandbox
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration


def probe(api: httpx.Client, sandbox_id: str, port: int) -> bool:
    r = api.post(f"/v1/sandboxes/{sandbox_id}/ports/{port}/probe")
    assert r.status_code == 200, r.text
    return bool(r.json()["reachable"])


def serve(api: httpx.Client, sandbox_id: str, port: int, delay: float = 0) -> None:
    """``python3 -m http.server PORT`` in the sandbox's /tmp, in the background."""
    r = api.post(f"/v1/sandboxes/{sandbox_id}/commands",
                 json={"cmd": "sh", "args": ["-c", f"sleep {delay}; cd /tmp && exec python3 -m http.server {port}"]})
    assert r.status_code == 201, r.text


def through_preview(qbox: QboxUp, sandbox_id: str, port: int, path: str = "/") -> httpx.Response:
    with httpx.Client(base_url=qbox.base_url, timeout=30) as visitor:
        return visitor.get(path, headers={"Host": f"{port}-{sandbox_id}.localhost:{qbox.port}"})


@pytest.fixture
def spawned(api: httpx.Client) -> Iterator[dict[str, Any]]:
    # The published CLI's body for `sandboxes create python -p 8000`.
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=120",
                 json={"templateId": "tpl_python", "timeoutSeconds": 300,
                       "ports": [{"port": 8000, "visibility": "public", "force": False}]})
    assert r.status_code == 201, r.text
    sb = r.json()
    try:
        assert sb["status"] == "running", sb
        yield sb
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_a_spawns_port_routes_once_something_listens(qbox: QboxUp, api: httpx.Client,
                                                     spawned: dict[str, Any]) -> None:
    sid = spawned["id"]
    [port] = api.get(f"/v1/sandboxes/{sid}/ports").json()["ports"]
    assert port["url"] == f"http://8000-{sid}.localhost:{qbox.port}/"
    assert (port["visibility"], port["hostHeaderMode"]) == ("public", "rewrite")
    assert probe(api, sid, 8000) is False
    api.put(f"/v1/sandboxes/{sid}/file", params={"path": "/tmp/hello.txt"}, content=b"hello from the sandbox\n")
    serve(api, sid, 8000)
    deadline = time.monotonic() + 30
    while not probe(api, sid, 8000):
        assert time.monotonic() < deadline, "http.server never listened"
        time.sleep(0.2)
    r = through_preview(qbox, sid, 8000, "/hello.txt")
    assert r.status_code == 200 and r.text == "hello from the sandbox\n"
    # Unexposed: the preview and the probe both say so.
    assert api.delete(f"/v1/sandboxes/{sid}/ports/8000").status_code == 204
    assert through_preview(qbox, sid, 8000).status_code == 404
    r = api.post(f"/v1/sandboxes/{sid}/ports/8000/probe")
    assert r.status_code == 404 and r.json()["error"]["code"] == "port_not_found"


def test_the_sdk_waits_for_a_server_that_starts_late(qbox: QboxUp, api: httpx.Client,
                                                     spawned: dict[str, Any]) -> None:
    sid = spawned["id"]
    sb = Sandbox.connect(sid, api_key=qbox.api_key, base_url=qbox.base_url)
    try:  # not ``with``, which would kill it: the fixture ends it
        with pytest.raises(PortNotReachableError):
            sb.ports.expose_and_wait(8001, timeout=1.5)
        serve(api, sid, 8002, delay=2)
        started = time.monotonic()
        url = sb.ports.expose_and_wait(8002, timeout=30)
        assert url == f"http://8002-{sid}.localhost:{qbox.port}/" and time.monotonic() - started >= 1.5
        assert sb.ports.probe(8002) is True and sb.get_host(8002) == f"8002-{sid}.localhost:{qbox.port}"
        assert [p.port for p in sb.ports.list()] == [8000, 8001, 8002]
        assert through_preview(qbox, sid, 8002).status_code == 200
    finally:
        sb.close()
