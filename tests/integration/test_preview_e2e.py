"""Preview URLs end to end: a real HTTP and WebSocket server (tests/preview_servers.py) inside a
crun sandbox, reached through a real ``qbox up`` with Host headers over loopback, as a browser
reaches ``http://{port}-{sandbox}.localhost:{listener port}/``."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.preview_servers import pattern_sha256, source
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration

PORT = 8000
Json = dict[str, Any]


def member_key(admin: httpx.Client, email: str) -> str:
    user = admin.post("/v1/users", json={"email": email}).json()
    created = admin.post("/v1/api-keys", json={"name": "m", "scopes": ["*"], "userId": user["id"]})
    assert created.status_code == 201, created.text
    return str(created.json()["secret"])


def preview_host(qbox: QboxUp, sandbox_id: str, port: int = PORT) -> str:
    return f"{port}-{sandbox_id}.localhost:{qbox.port}"


def start_server(api: httpx.Client, sandbox_id: str, port: int) -> None:
    r = api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": "/tmp/preview_servers.py"},
                content=source().encode())
    assert r.status_code == 204, r.text
    r = api.post(f"/v1/sandboxes/{sandbox_id}/commands",
                 json={"cmd": "python3", "args": ["/tmp/preview_servers.py", str(port)]})
    assert r.status_code == 201, r.text


def expose(api: httpx.Client, sandbox_id: str, port: int = PORT, **body: Any) -> Json:
    r = api.post(f"/v1/sandboxes/{sandbox_id}/ports", json={"port": port, "visibility": "public", **body})
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


def wait_reachable(api: httpx.Client, sandbox_id: str, port: int = PORT) -> None:
    deadline = time.monotonic() + 30
    while not api.post(f"/v1/sandboxes/{sandbox_id}/ports/{port}/probe").json().get("reachable"):
        assert time.monotonic() < deadline, "the server in the sandbox never listened"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def site(qbox: QboxUp) -> Iterator[Json]:
    """A sandbox serving tests/preview_servers.py on port 8000, exposed public."""
    with qbox.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python"})
        assert r.status_code == 201, r.text
        sb = r.json()
        try:
            start_server(api, sb["id"], PORT)
            expose(api, sb["id"])
            wait_reachable(api, sb["id"])
            yield sb
        finally:
            api.delete(f"/v1/sandboxes/{sb['id']}")


@pytest.fixture
def visit(qbox: QboxUp, site: Json) -> Iterator[httpx.Client]:
    """A client of the site's preview host (through 127.0.0.1, the Host header naming it)."""
    with httpx.Client(base_url=qbox.base_url, timeout=60,
                      headers={"host": preview_host(qbox, site["id"])}) as client:
        yield client


def set_port(qbox: QboxUp, site: Json, **patch: Any) -> Json:
    with qbox.client() as api:
        r = api.patch(f"/v1/sandboxes/{site['id']}/ports/{PORT}", json=patch)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def public(qbox: QboxUp, site: Json) -> Iterator[None]:
    """The port is public again after the test, whatever it changed."""
    yield
    set_port(qbox, site, visibility="public", hostHeaderMode="rewrite")


# --- the data plane ------------------------------------------------------------------------------

def test_keep_alive_serves_several_requests_on_one_connection(qbox: QboxUp, site: Json) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", qbox.port, timeout=30)
    try:
        conn.connect()
        first = conn.sock
        for _ in range(5):
            conn.request("GET", "/hello", headers={"Host": preview_host(qbox, site["id"])})
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, b"hello")
            assert conn.sock is first
    finally:
        conn.close()


def test_a_streamed_upload_and_a_long_download(visit: httpx.Client) -> None:
    blocks = [bytes([index]) * 65536 for index in range(160)]  # 10 MiB, chunked
    r = visit.post("/echo", content=iter(blocks))
    echo = r.json()
    assert echo["bodyLength"] == 160 * 65536
    assert echo["bodySha256"] == hashlib.sha256(b"".join(blocks)).hexdigest()
    size = 64 * 1024 * 1024
    digest, received = hashlib.sha256(), 0
    with visit.stream("GET", f"/bytes?size={size}") as answer:
        assert answer.headers["content-length"] == str(size)
        for chunk in answer.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == size and digest.hexdigest() == pattern_sha256(size)


def test_server_sent_events_arrive_one_by_one(visit: httpx.Client) -> None:
    arrivals: list[float] = []
    with visit.stream("GET", "/sse?events=4&interval=0.6") as answer:
        assert answer.headers["content-type"] == "text/event-stream"
        for line in answer.iter_lines():
            if line.startswith("data: "):
                sent = float(line.split()[2])
                arrivals.append(time.time())
                assert arrivals[-1] - sent < 0.45, "an event was held back"
    assert len(arrivals) == 4 and arrivals[-1] - arrivals[0] > 1.5


def test_a_websocket_echo_with_its_subprotocol(qbox: QboxUp, site: Json) -> None:
    sock = socket.create_connection(("127.0.0.1", qbox.port))
    with ws_connect(f"ws://{preview_host(qbox, site['id'])}/ws", sock=sock,
                    subprotocols=["vite-hmr"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "vite-hmr"
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\xffbinary"
        ws.send("close:4000:done")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4000 and ws.close_reason == "done"


def test_the_host_header_follows_host_header_mode(qbox: QboxUp, site: Json, visit: httpx.Client,
                                                  public: None) -> None:
    def upstream_headers() -> dict[str, str]:
        return {k.lower(): v for k, v in visit.get("/echo").json()["headers"]}

    assert upstream_headers()["host"] == f"localhost:{PORT}"
    set_port(qbox, site, hostHeaderMode="preserve")
    seen = upstream_headers()
    assert seen["host"] == preview_host(qbox, site["id"])
    assert seen["x-forwarded-host"] == preview_host(qbox, site["id"]) and seen["x-forwarded-proto"] == "http"


def test_qbox_credentials_never_reach_the_sandbox(qbox: QboxUp, visit: httpx.Client) -> None:
    r = visit.get("/echo?a=1&qbox_signature=1.x", headers={
        "authorization": f"Bearer {qbox.api_key}", "cookie": "qbox_session=s; app=1; qbox_preview=p"})
    echo = r.json()
    seen = {k.lower(): v for k, v in echo["headers"]}
    assert echo["target"] == "/echo?a=1"
    assert "authorization" not in seen and seen["cookie"] == "app=1"


# --- Host-header tricks -------------------------------------------------------------------------

def _raw(qbox: QboxUp, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", qbox.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), b"0"))
        while len(body) < length:
            body += sock.recv(65536)
        return head + b"\r\n\r\n" + body


def test_host_header_tricks_are_refused(qbox: QboxUp, site: Json) -> None:
    host = preview_host(qbox, site["id"]).encode()
    # An absolute-form target: refused by the proxy (httptools hands the app its path only) …
    answer = _raw(qbox, b"GET http://example.com/hello HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"absolute-form" in answer
    # … or by the HTTP parser itself when its authority is a preview host (the "_" of "sb_").
    for named in (host, b"127.0.0.1"):
        answer = _raw(qbox, b"GET http://" + host + b"/hello HTTP/1.1\r\nHost: " + named + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b"hello" not in answer.partition(b"\r\n\r\n")[2]
    # The control plane's own Host with an absolute-form target naming elsewhere: the API, no proxy.
    answer = _raw(qbox, b"GET http://example.com/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404") and b"no such route" in answer
    answer = _raw(qbox, b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: " + host + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404")
    answer = _raw(qbox, b"GET /hello HTTP/1.1\r\nHost: x-" + host + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404") and b"not a preview address" in answer


# --- visibility ---------------------------------------------------------------------------------

def test_private(qbox: QboxUp, site: Json, visit: httpx.Client, public: None) -> None:
    set_port(qbox, site, visibility="private")
    assert visit.get("/hello", headers={"authorization": f"Bearer {qbox.api_key}"}).text == "hello"
    with qbox.client() as api:
        other = member_key(api, "preview-other@example.com")
    r = visit.get("/hello", headers={"authorization": f"Bearer {other}"})
    assert r.status_code == 404 and r.json()["error"]["message"] == f"port {PORT} of {site['id']} is not exposed"
    r = visit.get("/hello")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = visit.get("/hello", headers={"accept": "text/html"})
    assert r.status_code == 303
    to = urlsplit(r.headers["location"])
    assert (to.netloc, to.path) == (f"localhost:{qbox.port}", "/preview-auth")
    # Named in allowedUsers (by email), the other member gets in.
    set_port(qbox, site, allowedUsers=["preview-other@example.com"])
    assert visit.get("/hello", headers={"authorization": f"Bearer {other}"}).text == "hello"


def test_signed_url_valid_expired_and_revoked(qbox: QboxUp, site: Json, visit: httpx.Client,
                                              public: None) -> None:
    set_port(qbox, site, visibility="signed_url")
    assert visit.get("/hello").status_code == 403
    with qbox.client() as api:
        first = api.post(f"/v1/sandboxes/{site['id']}/ports/{PORT}/signed-url", json={"ttlSeconds": 60}).json()
        url = urlsplit(first["signedUrl"])
        r = visit.get(f"{url.path}hello?{url.query}")
        assert r.text == "hello"
        cookie = r.headers["set-cookie"].split(";")[0]
        assert visit.get("/hello", headers={"cookie": cookie}).text == "hello"
        # A new URL rotates the key: the old one and its cookie stop working.
        api.post(f"/v1/sandboxes/{site['id']}/ports/{PORT}/signed-url", json={})
        assert visit.get(f"/hello?{url.query}").status_code == 403
        assert visit.get("/hello", headers={"cookie": cookie}).status_code == 403
        short = api.post(f"/v1/sandboxes/{site['id']}/ports/{PORT}/signed-url", json={"ttlSeconds": 1}).json()
    time.sleep(2.1)
    r = visit.get(f"/hello?{urlsplit(short['signedUrl']).query}", headers={"accept": "text/html"})
    assert r.status_code == 403 and "expired" in r.text


# --- errors --------------------------------------------------------------------------------------

def test_unexposed_port_nothing_listening_and_an_ended_sandbox(qbox: QboxUp, site: Json) -> None:
    with httpx.Client(base_url=qbox.base_url, timeout=30) as client, qbox.client() as api:
        r = client.get("/", headers={"host": preview_host(qbox, site["id"], 8001)})
        assert r.status_code == 404 and "is not exposed" in r.json()["error"]["message"]
        expose(api, site["id"], 8002)
        started = time.monotonic()
        r = client.get("/", headers={"host": preview_host(qbox, site["id"], 8002)})
        assert r.status_code == 502 and r.json()["error"]["code"] == "port_not_reachable"
        assert time.monotonic() - started < 10
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python"})
        assert r.status_code == 201, r.text
        ended = r.json()["id"]
        expose(api, ended)
        api.delete(f"/v1/sandboxes/{ended}")
        r = client.get("/", headers={"host": preview_host(qbox, ended), "accept": "text/html"})
        assert r.status_code in (404, 502) and r.headers["content-type"].startswith("text/html")
        assert ended in r.text


def test_a_refused_websocket_upstream_is_a_clear_error(qbox: QboxUp, site: Json) -> None:
    sock = socket.create_connection(("127.0.0.1", qbox.port))
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://{preview_host(qbox, site['id'])}/ws-refuse", sock=sock, open_timeout=20)
    assert refused.value.response.status_code == 502
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "bad_gateway"
