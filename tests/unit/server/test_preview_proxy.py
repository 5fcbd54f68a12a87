"""The preview proxy in front of the app (server/http/preview.py), over a real control plane and
database with two seams faked: the route table (which ports are exposed) and the host agent
(an echo of what reached it). The integration tests (tests/integration/test_preview_e2e.py)
run the same paths against a real sandbox."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from starlette.testclient import WebSocketDenialResponse

from qbox.core.errors import QboxError
from qbox.server.app import Startup, create_app
from qbox.server.http import preview
from qbox.server.http.preview import PreviewDispatcher
from qbox.server.services.ports import PortService
from qbox.server.services.preview import PreviewDomain, PreviewRoute, new_signing_key, sign
from qbox.server.settings import ServerSettings
from tests.unit.server.helpers import add_user_with_key, remember_database

SB = "sb_0123456789abcdef"
HOST = f"8000-{SB}.localhost"
PASSWORD = "correct horse battery staple"


class RouteTable(PortService):
    """The real service with its lookup replaced by a dict the test fills."""

    def __init__(self, base: PortService, routes: dict[tuple[str, int], PreviewRoute]) -> None:
        self.__dict__.update(base.__dict__)
        self.routes = routes

    async def route(self, sandbox_id: str, port: int) -> PreviewRoute | None:
        return self.routes.get((sandbox_id, port))


class EchoAnswer:
    def __init__(self, status: int, headers: list[tuple[str, str]], chunks: list[bytes]) -> None:
        self.status, self.headers, self._chunks = status, headers, chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def close(self) -> None:
        self.closed = True


class EchoSocket:
    def __init__(self, subprotocols: list[str]) -> None:
        self.subprotocol = subprotocols[0] if subprotocols else None
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""

    async def send(self, message: str | bytes) -> None:
        if message == "bye":
            self.close_code, self.close_reason = 4001, "asked to"
            await self.queue.put(None)
            return
        await self.queue.put(message)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while (message := await self.queue.get()) is not None:
            yield message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.queue.put(None)

    async def __aenter__(self) -> EchoSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class EchoPorts:
    """The agent's ports client: answers with what it was asked (port 9: nothing listens)."""

    answers: list[EchoAnswer] = field(default_factory=list)

    async def http(self, sandbox_id: str, port: int, method: str, target: str,
                   headers: list[tuple[str, str]], body: AsyncIterable[bytes] | None) -> EchoAnswer:
        if port == 9:
            raise QboxError("nothing listens on port 9", status=502, code="port_not_reachable")
        received = b"".join([chunk async for chunk in body]) if body is not None else b""
        echo = json.dumps({"method": method, "target": target, "headers": headers,
                           "body": received.decode()}).encode()
        answer = EchoAnswer(200, [("content-type", "application/json"), ("connection", "close"),
                                  ("set-cookie", "qbox_preview=forged"), ("set-cookie", "app=1")],
                            [echo[:10], echo[10:]])
        self.answers.append(answer)
        return answer

    async def websocket(self, sandbox_id: str, port: int, target: str, headers: list[tuple[str, str]],
                        subprotocols: list[str]) -> EchoSocket:
        return EchoSocket(subprotocols)


@dataclass
class EchoAgent:
    ports: EchoPorts = field(default_factory=EchoPorts)

    async def aclose(self) -> None:
        pass


@dataclass
class Proxy:
    client: TestClient
    routes: dict[tuple[str, int], PreviewRoute]
    agent: EchoAgent
    admin_key: str
    data_dir: Path

    def expose(self, port: int = 8000, **fields: Any) -> PreviewRoute:
        route = PreviewRoute(sandbox_id=SB, port=port, owner_id="usr_owner", host_id="h1",
                             sandbox_status="running", visibility="public", host_header_mode="rewrite",
                             allowed_users=(), signing_key=new_signing_key())
        route = replace(route, **fields)
        self.routes[(SB, port)] = route
        return route

    def get(self, path: str = "/", host: str = HOST, **kw: Any) -> Any:
        headers = {"host": host, **kw.pop("headers", {})}
        self.client.cookies.clear()  # cookies are sent by hand here, as a browser would to this host
        return self.client.get(path, headers=headers, follow_redirects=False, **kw)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    yield from make_proxy(tmp_path, None)


@pytest.fixture
def proxy_on_each_database(tmp_path: Path, database: str | None) -> Iterator[Proxy]:
    """The sign-in's tokens and cookie key are rows of cluster_keys: on SQLite and PostgreSQL."""
    yield from make_proxy(tmp_path, database)


def make_proxy(tmp_path: Path, database: str | None) -> Iterator[Proxy]:
    remember_database(tmp_path, database)
    settings = ServerSettings(data_dir=tmp_path, database_url=database, port=80)
    secrets: list[str] = []
    app = create_app(settings, Startup(embedded_agent=False, run_sandbox_loops=False,
                                       on_first_admin=lambda admin: secrets.append(admin.secret or "")))
    with TestClient(app, raise_server_exceptions=False) as client:
        services = app.state.services
        routes: dict[tuple[str, int], PreviewRoute] = {}
        services.ports = RouteTable(services.ports, routes)
        agent = EchoAgent()
        services.ctx.agents.add("h1", agent)
        yield Proxy(client, routes, agent, secrets[0], tmp_path)


def echoed(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    data["headers"] = {key: value for key, value in data["headers"]}
    return data


# --- the dispatcher --------------------------------------------------------------------------

def test_preview_hosts_go_to_the_proxy_and_others_to_the_app(proxy: Proxy) -> None:
    auth = {"Authorization": f"Bearer {proxy.admin_key}"}
    assert proxy.client.get("/v1/sandboxes", headers=auth).status_code == 200
    r = proxy.get("/v1/sandboxes", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["message"] == f"port 8000 of {SB} is not exposed"
    proxy.expose()
    assert echoed(proxy.get("/v1/sandboxes", headers=auth))["target"] == "/v1/sandboxes"
    # The dashboard's pages and the sign-in route are not served on a preview host either.
    assert echoed(proxy.get("/login"))["target"] == "/login"
    assert echoed(proxy.get("/preview-auth?to=x"))["target"] == "/preview-auth?to=x"


def test_a_malformed_preview_host_is_refused(proxy: Proxy) -> None:
    for host in ("x.localhost", f"0-{SB}.localhost", f"70000-{SB}.localhost", "8000-sb_short.localhost",
                 f"a.8000-{SB}.localhost", f"8000-{SB}.localhost:notaport"):
        r = proxy.get("/", host=host)
        assert r.status_code == 404 and "not a preview address" in r.json()["error"]["message"], host


def test_two_host_headers_are_refused(proxy: Proxy) -> None:
    proxy.expose()
    r = proxy.client.get("/", headers=[("host", HOST), ("host", "localhost")])
    assert r.status_code == 400 and "exactly one Host" in r.json()["error"]["message"]


def test_forwarded_host_headers_do_not_route(proxy: Proxy) -> None:
    proxy.expose()
    r = proxy.client.get("/v1/sandboxes", headers={"x-forwarded-host": HOST, "forwarded": f"host={HOST}",
                                                    "Authorization": f"Bearer {proxy.admin_key}"})
    assert r.status_code == 200 and isinstance(r.json(), list)  # the API: the Host was not a preview's
    headers = echoed(proxy.get(headers={"x-forwarded-host": "evil.example", "x-forwarded-for": "6.6.6.6"}))["headers"]
    assert headers["x-forwarded-host"] == HOST and headers["x-forwarded-for"] == "testclient"
    assert "forwarded" not in headers


def _asgi_call(scope: dict[str, Any]) -> list[dict[str, Any]]:
    """The dispatcher called directly with a scope as uvicorn makes it; what it sent."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a preview request reached the app")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    dispatcher = PreviewDispatcher(app, PreviewDomain("http", "localhost", None))
    asyncio.run(dispatcher(scope, receive, send))
    return sent


def test_an_absolute_form_target_is_refused() -> None:
    # httptools hands uvicorn only the path of "GET http://x/p"; the protocol keeps the raw target.
    scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/p", "raw_path": b"/p",
             "query_string": b"", "headers": [(b"host", HOST.encode())], "client": ("127.0.0.1", 1),
             "extensions": {preview.TARGET_EXTENSION: {"target": b"http://elsewhere/p"}}}
    sent = _asgi_call(scope)
    assert sent[0]["status"] == 400
    assert b"absolute-form" in sent[1]["body"]
    # An h11 or WebSocket scope keeps it in the path.
    sent = _asgi_call({**scope, "path": "http://elsewhere/p", "extensions": {}})
    assert sent[0]["status"] == 400


# --- refusals ----------------------------------------------------------------------------------

def test_an_unexposed_port_is_404_as_json_or_a_page(proxy: Proxy) -> None:
    proxy.expose(8000)
    r = proxy.get("/", host=f"8001-{SB}.localhost")
    assert r.status_code == 404 and r.json()["error"] == {
        "code": "not_found", "message": f"port 8001 of {SB} is not exposed",
        "details": {"sandboxId": SB, "port": 8001}}
    r = proxy.get("/", host=f"8001-{SB}.localhost", headers={"accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert f"port 8001 of {SB} is not exposed" in r.text


def test_a_sandbox_not_running_nothing_listening_and_a_host_gone_are_clear_errors(proxy: Proxy) -> None:
    proxy.expose(8000, sandbox_status="paused")
    r = proxy.get()
    assert r.status_code == 502 and r.json()["error"]["code"] == "sandbox_not_active"
    assert "is paused, not running" in r.json()["error"]["message"]
    proxy.expose(9)
    r = proxy.get(host=f"9-{SB}.localhost")
    assert r.status_code == 502 and r.json()["error"]["code"] == "port_not_reachable"
    proxy.expose(8000, host_id="h_gone")
    r = proxy.get()
    assert r.status_code == 503 and r.json()["error"]["code"] == "host_unavailable"


def test_a_sandbox_past_its_connection_bound_is_503(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy.expose()
    monkeypatch.setattr(preview, "MAX_OPEN_PER_SANDBOX", 0)
    r = proxy.get()
    assert r.status_code == 503 and r.json()["error"]["details"]["transient"] is True
    assert r.headers["retry-after"] == "1"


# --- what reaches the sandbox -----------------------------------------------------------------

def test_qbox_credentials_never_reach_the_sandbox(proxy: Proxy) -> None:
    proxy.expose()
    cookies = "qbox_session=s; app=1; qbox_preview=p; qbox_csrf=c; other=2; qbox_preview_sig=g"
    data = echoed(proxy.get("/a/b?x=1&qbox_signature=123.abc&qbox_preview_token=t&y=%20",
                            headers={"cookie": cookies, "authorization": f"Bearer {proxy.admin_key}",
                                     "connection": "x-secret", "x-secret": "hop", "te": "trailers"}))
    headers = data["headers"]
    assert data["target"] == "/a/b?x=1&y=%20"
    assert headers["cookie"] == "app=1; other=2"
    assert "authorization" not in headers
    assert not {"connection", "x-secret", "te"} & set(headers)
    # The app's own bearer token is its business.
    assert echoed(proxy.get(headers={"authorization": "Bearer app-token"}))["headers"]["authorization"] \
        == "Bearer app-token"


def test_the_host_header_follows_host_header_mode(proxy: Proxy) -> None:
    proxy.expose(host_header_mode="rewrite")
    assert echoed(proxy.get(host=HOST + ":8080"))["headers"]["host"] == "localhost:8000"
    proxy.expose(host_header_mode="preserve")
    headers = echoed(proxy.get(host=HOST + ":8080"))["headers"]
    assert headers["host"] == HOST + ":8080" and headers["x-forwarded-proto"] == "http"


def test_the_body_streams_to_the_sandbox_and_the_answer_back(proxy: Proxy) -> None:
    proxy.expose()
    r = proxy.client.post("/upload", headers={"host": HOST}, content=iter([b"part one, ", b"part two"]))
    data = echoed(r)
    assert data["method"] == "POST" and data["body"] == "part one, part two"
    assert r.headers.get_list("set-cookie") == ["app=1"]  # the upstream may not set qbox's cookies
    assert "connection" not in r.headers or r.headers["connection"] != "close"
    assert all(answer.closed for answer in proxy.agent.ports.answers)


def test_a_websocket_is_relayed_with_the_upstream_subprotocol(proxy: Proxy) -> None:
    proxy.expose()
    with proxy.client.websocket_connect("/hmr", headers={"host": HOST},
                                        subprotocols=["vite-hmr", "other"]) as ws:
        assert ws.accepted_subprotocol == "vite-hmr"
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_bytes() == b"\x00\x01"
        ws.send_text("bye")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert (closed.value.code, closed.value.reason) == (4001, "asked to")


def test_a_websocket_to_a_private_port_without_credentials_is_denied(proxy: Proxy) -> None:
    proxy.expose(visibility="private")
    with pytest.raises(WebSocketDenialResponse) as denied:
        with proxy.client.websocket_connect("/hmr", headers={"host": HOST}):
            pass
    assert denied.value.status_code == 401


# --- visibility ------------------------------------------------------------------------------------

def test_private_by_api_key(proxy: Proxy) -> None:
    owner, owner_key = add_user_with_key(proxy.data_dir)
    _, stranger_key = add_user_with_key(proxy.data_dir)
    friend, friend_key = add_user_with_key(proxy.data_dir)
    proxy.expose(visibility="private", owner_id=owner, allowed_users=(friend,))
    for key in (owner_key, friend_key, proxy.admin_key):
        assert echoed(proxy.get(headers={"authorization": f"Bearer {key}"}))["method"] == "GET"
    r = proxy.get(headers={"authorization": f"Bearer {stranger_key}"})
    assert r.status_code == 404 and r.json()["error"]["message"] == f"port 8000 of {SB} is not exposed"
    r = proxy.get(headers={"authorization": "Bearer qbox_wrong"})
    assert r.status_code == 401 and "invalid" in r.json()["error"]["message"]
    for headers in ({}, {"authorization": "Bearer app-token"}, {"accept": "text/html"}):
        r = proxy.client.post("/", headers={"host": HOST, **headers})
        assert r.status_code == 401, headers
    # Removed from allowedUsers: the next request is refused.
    proxy.expose(visibility="private", owner_id=owner, allowed_users=())
    assert proxy.get(headers={"authorization": f"Bearer {friend_key}"}).status_code == 404


def _login(proxy: Proxy, email: str) -> str:
    r = proxy.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    cookie = r.cookies["qbox_session"]
    proxy.client.cookies.clear()
    return str(cookie)


def _member(proxy: Proxy, email: str) -> str:
    r = proxy.client.post("/v1/users", json={"email": email, "role": "member", "password": PASSWORD},
                          headers={"Authorization": f"Bearer {proxy.admin_key}"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_private_in_a_browser_signs_in_through_the_dashboard(proxy_on_each_database: Proxy) -> None:
    proxy = proxy_on_each_database
    owner = _member(proxy, "owner@example.com")
    proxy.expose(visibility="private", owner_id=owner)
    html = {"accept": "text/html"}
    r = proxy.get("/page?a=1", headers=html)
    assert r.status_code == 303
    location = urlsplit(r.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "localhost", "/preview-auth")
    to = parse_qs(location.query)["to"][0]
    assert to == f"http://{HOST}/page?a=1"
    # Not signed in: the dashboard's sign-in first, then back here.
    r = proxy.client.get(f"/preview-auth?{location.query}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/preview-auth%3Fto%3D")
    session = _login(proxy, "owner@example.com")
    r = proxy.client.get(f"/preview-auth?{location.query}", headers={"cookie": f"qbox_session={session}"},
                         follow_redirects=False)
    # A page that refreshes to the preview (a redirect would be stopped by the sign-in form's CSP).
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    back = urlsplit(unescape(re.search(r"url=([^']+)'", r.text).group(1)))  # type: ignore[union-attr]
    assert back.netloc == HOST and back.path == "/page" and "qbox_preview_token=" in back.query
    # The preview host trades the token for its cookie and drops it from the address.
    r = proxy.get(f"/page?{back.query}", headers=html)
    assert r.status_code == 303 and r.headers["location"] == f"http://{HOST}/page?a=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("qbox_preview=") and "HttpOnly" in cookie and "Domain" not in cookie
    value = cookie.split(";")[0]
    data = echoed(proxy.get("/page?a=1", headers={**html, "cookie": f"{value}; app=1"}))
    assert data["headers"]["cookie"] == "app=1"
    # The token works once.
    assert proxy.get(f"/page?{back.query}").status_code == 403
    # The cookie is bound to its sandbox and port.
    proxy.expose(8001, visibility="private", owner_id=owner)
    assert proxy.get(host=f"8001-{SB}.localhost", headers={"cookie": value}).status_code == 401
    # A user who may no longer open it (made public and back private for someone else).
    proxy.expose(visibility="private", owner_id="usr_someone_else")
    assert proxy.get(headers={"cookie": value}).status_code == 404
    # A forged cookie names nobody.
    assert proxy.get(headers={"cookie": value[:-4] + "0000"}).status_code == 401


def test_preview_auth_refuses_a_user_who_may_not_open_the_port(proxy: Proxy) -> None:
    _member(proxy, "stranger@example.com")
    proxy.expose(visibility="private", owner_id="usr_owner")
    session = _login(proxy, "stranger@example.com")
    cookie = {"cookie": f"qbox_session={session}"}
    r = proxy.client.get("/preview-auth", params={"to": f"http://{HOST}/"}, headers=cookie)
    assert r.status_code == 404 and "is not exposed" in r.text
    for to in ("http://evil.example/", f"javascript://{HOST}/", f"http://user@{HOST}/", ""):
        r = proxy.client.get("/preview-auth", params={"to": to}, headers=cookie, follow_redirects=False)
        assert r.status_code == 400, to


def test_signed_url(proxy: Proxy) -> None:
    import time

    route = proxy.expose(visibility="signed_url")
    expires = int(time.time()) + 60
    signature = sign(route.signing_key, SB, 8000, expires)
    r = proxy.get(f"/index.html?qbox_signature={signature}&v=2")
    assert echoed(r)["target"] == "/index.html?v=2"
    app_cookie, cookie = r.headers.get_list("set-cookie")
    assert app_cookie == "app=1" and cookie.startswith(f"qbox_preview_sig={signature};") and "HttpOnly" in cookie
    # The page's assets load with the cookie alone.
    assert echoed(proxy.get("/app.js", headers={"cookie": f"qbox_preview_sig={signature}"}))["target"] == "/app.js"
    r = proxy.get("/")
    assert r.status_code == 403 and r.json()["error"]["details"]["reason"] == "signature_required"
    expired = sign(route.signing_key, SB, 8000, int(time.time()) - 1)
    r = proxy.get(f"/?qbox_signature={expired}", headers={"accept": "text/html"})
    assert r.status_code == 403 and "expired" in r.text
    # Minting a new URL rotates the key: the old signature and its cookie stop working.
    proxy.expose(visibility="signed_url", signing_key=new_signing_key())
    assert proxy.get(f"/?qbox_signature={signature}").json()["error"]["details"]["reason"] == "signature_invalid"
    assert proxy.get(headers={"cookie": f"qbox_preview_sig={signature}"}).status_code == 403
    # A key of someone who may open the port works too.
    assert echoed(proxy.get(headers={"authorization": f"Bearer {proxy.admin_key}"}))["method"] == "GET"


# --- bounded waits (the dispatcher called directly, as uvicorn calls it) ------------------------

class EndlessAnswer(EchoAnswer):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.01)
            yield b"data: tick\n\n"


class StubbornPorts:
    def __init__(self, answer: EchoAnswer | None) -> None:
        self.answer = answer

    async def http(self, *args: Any) -> EchoAnswer:
        if self.answer is None:
            await asyncio.sleep(3600)
        assert self.answer is not None
        return self.answer


def _services(ports: Any) -> Any:
    from types import SimpleNamespace

    route = PreviewRoute(sandbox_id=SB, port=8000, owner_id="usr_owner", host_id="h1", sandbox_status="running",
                         visibility="public", host_header_mode="rewrite", allowed_users=(), signing_key="00")

    async def lookup(sandbox_id: str, port: int) -> PreviewRoute:
        return route

    agents = SimpleNamespace(for_host=lambda host_id: SimpleNamespace(ports=ports))
    services = SimpleNamespace(ports=SimpleNamespace(route=lookup), ctx=SimpleNamespace(agents=agents))
    return SimpleNamespace(state=SimpleNamespace(services=services))


def _run(ports: Any, disconnect_after: float) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/sse", "raw_path": b"/sse",
             "query_string": b"", "headers": [(b"host", HOST.encode())], "client": ("127.0.0.1", 1),
             "app": _services(ports)}
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(disconnect_after)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a preview request reached the app")

    dispatcher = PreviewDispatcher(app, PreviewDomain("http", "localhost", None))
    asyncio.run(asyncio.wait_for(dispatcher(scope, receive, send), 10))
    return sent


def test_the_clients_disconnect_ends_an_endless_answer() -> None:
    answer = EndlessAnswer(200, [("content-type", "text/event-stream")], [])
    sent = _run(StubbornPorts(answer), disconnect_after=0.3)
    assert sent[0]["status"] == 200 and len(sent) > 3
    assert answer.closed


def test_an_upstream_that_never_answers_is_a_504(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview, "HEAD_SECONDS", 0.2)
    sent = _run(StubbornPorts(None), disconnect_after=3600)
    assert sent[0]["status"] == 504 and b"upstream_timeout" in sent[1]["body"]


def test_a_client_gone_before_the_answer_began_cancels_the_wait() -> None:
    sent = _run(StubbornPorts(None), disconnect_after=0.2)
    assert sent == []


def test_an_unexpected_error_is_the_envelope_not_a_traceback() -> None:
    class Broken:
        async def http(self, *args: Any) -> EchoAnswer:
            raise KeyError("a bug")

    sent = _run(Broken(), disconnect_after=3600)
    assert sent[0]["status"] == 500 and b'"code":"internal"' in sent[1]["body"]
    assert b"a bug" not in sent[1]["body"]


def test_a_preview_cookie_counts_for_websockets_and_changes_only_from_its_own_pages(proxy: Proxy) -> None:
    """Every preview is same-site with every other: a sibling preview's page gets the browser to send
    SameSite=Lax cookies, and a WebSocket has no CORS. So its Origin must be the preview's own."""
    import time

    route = proxy.expose(visibility="signed_url")
    cookie = {"cookie": f"qbox_preview_sig={sign(route.signing_key, SB, 8000, int(time.time()) + 60)}"}
    sibling = {**cookie, "origin": "http://8000-sb_attacker0000.localhost"}
    own = {**cookie, "origin": f"http://{HOST}"}
    assert echoed(proxy.get(headers=sibling))["method"] == "GET"  # reading: CORS is the app's
    r = proxy.client.post("/change", headers={"host": HOST, **sibling})
    assert r.status_code == 403 and r.json()["error"]["details"]["reason"] == "origin"
    assert echoed(proxy.client.post("/change", headers={"host": HOST, **own}))["method"] == "POST"
    with pytest.raises(WebSocketDenialResponse) as denied:
        with proxy.client.websocket_connect("/hmr", headers={"host": HOST, **sibling}):
            pass
    assert denied.value.status_code == 403
    with proxy.client.websocket_connect("/hmr", headers={"host": HOST, **own}) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "hi"
