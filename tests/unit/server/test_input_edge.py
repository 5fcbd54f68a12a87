"""The input edge (issue 13, findings 2, 5, 6, 10 and 12): bodies, URLs, queries and path ids
from outside are bounded and strict, refused with the envelope, and never a 500."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import create_engine, text
from starlette.testclient import WebSocketDenialResponse

from qbox.core.shell_protocol import BadFrame, parse_frame
from qbox.server.db.engine import alembic_config
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_sandboxes_api import spawn

SURROGATE = "\\ud800"  # the six characters of the JSON escape, sent raw
# The defaults of QBOX_MAX_JSON_BODY_BYTES and QBOX_MAX_URL_BYTES, which the harness keeps.
MAX_JSON = 1024 * 1024
MAX_URL = 8192


@pytest.fixture
def edge(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database)  # its agent's wire records every call the control plane makes


def raw_post(h: Harness, path: str, body: str | bytes, key: str | None = None) -> httpx.Response:
    return h.client.post(path, content=body.encode() if isinstance(body, str) else body,
                         headers={**h.auth(key), "content-type": "application/json"})


def assert_refused(r: httpx.Response, status: int = 400, code: str = "validation_error",
                   field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert field in error["details"]["fieldErrors"], error
    return error


# --- finding 2: lone surrogates --------------------------------------------------------------


def test_a_lone_surrogate_is_a_400_naming_the_field_on_every_route(edge: Harness) -> None:
    sb = spawn(edge)["id"]
    base = f"/v1/sandboxes/{sb}"
    cases = [
        (f"{base}/exec", '{"cmd":"echo","args":["%s"]}', "args.0"),
        (f"{base}/commands", '{"cmd":"echo","args":["ok","%s"]}', "args.1"),
        (f"{base}/commands", '{"cmd":"echo","env":{"A":"%s"}}', "env.A"),
        (f"{base}/commands", '{"cmd":"echo","cwd":"/tmp/%s"}', "cwd"),
        (f"{base}/exec", '{"cmd":"cat","stdin":"%s"}', "stdin"),
        (f"{base}/code-execute", '{"code":"1","env":{"A":"%s"}}', "env.A"),
        ("/v1/sandboxes", '{"templateId":"tpl_python","envs":{"A":"x%s"}}', "envs.A"),
        ("/v1/api-keys", '{"name":"%s","scopes":["sandboxes:read"]}', "name"),
    ]
    for path, template, field in cases:
        assert_refused(raw_post(edge, path, template.replace("%s", SURROGATE)), field=field)
    login = '{"email":"%s","password":"x"}'.replace("%s", SURROGATE)
    assert_refused(raw_post(edge, "/auth/login", login), field="email")


def test_a_spawn_with_a_surrogate_label_creates_nothing(edge: Harness) -> None:
    before = len(edge.client.get("/v1/sandboxes", headers=edge.auth()).json())
    for labels, field in (('{"k":"%s"}', "labels.k"), ('{"%s":"v"}', None)):
        body = '{"templateId":"tpl_python","labels":' + labels.replace("%s", SURROGATE) + "}"
        assert_refused(raw_post(edge, "/v1/sandboxes", body), field=field)
    r = edge.client.get("/v1/sandboxes", headers=edge.auth())
    assert r.status_code == 200 and len(r.json()) == before


def test_a_stored_surrogate_never_breaks_reading_sandboxes(edge: Harness) -> None:
    """A row written before the edge refused them: listings and gets still answer, with U+FFFD."""
    member_id, member = add_user_with_key(edge.settings.data_dir)
    sb = spawn(edge, {"labels": {"name": "x"}}, key=member)["id"]
    with db_session(edge.settings.data_dir) as session:
        session.execute(text("UPDATE sandboxes SET labels = :raw WHERE id = :id"),
                        {"raw": '{"name": "a\\ud800b", "\\udc00": "k"}', "id": sb})
        session.commit()
    for key in (member, None):  # the owner and an admin
        listing = edge.client.get("/v1/sandboxes", headers=edge.auth(key))
        assert listing.status_code == 200, listing.text
        one = edge.client.get(f"/v1/sandboxes/{sb}", headers=edge.auth(key))
        assert one.status_code == 200, one.text
        assert one.json()["labels"] == {"name": "a\ufffdb", "\ufffd": "k"}


def test_invalid_utf8_in_a_body_is_a_400(edge: Harness) -> None:
    assert_refused(raw_post(edge, "/v1/sandboxes", b'{"templateId":"tpl_\xff"}'), field="body")


# --- finding 5: bodies are bounded while they arrive ------------------------------------------


def _send_chunked(h: Harness, path: str, headers: dict[str, str], total: int,
                  chunk: int = 64 * 1024) -> tuple[httpx.Response, int]:
    """POST ``total`` bytes (no Content-Length) through the ASGI app; how many it pulled."""
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"email":"'
        while pulled < total:
            pulled += chunk
            yield b"a" * chunk

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=h.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(path, content=body(), headers=headers)

    return h.client.portal.call(post), pulled  # type: ignore[union-attr]


@pytest.mark.parametrize("route", ["/auth/login", "/v1/sandboxes"])
def test_a_chunked_body_stops_being_read_at_the_limit(edge: Harness, route: str) -> None:
    limit = MAX_JSON
    headers = {"content-type": "application/json", **(edge.auth() if route.startswith("/v1") else {})}
    r, pulled = _send_chunked(edge, route, headers, total=64 * limit)
    assert_refused(r, 413, "payload_too_large")
    assert pulled <= limit + 64 * 1024, f"read {pulled} bytes of a body limited to {limit}"


def test_a_declared_oversized_body_is_refused_before_reading(edge: Harness) -> None:
    r = edge.client.post("/auth/login", content=b"x" * (MAX_JSON + 1),
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert_refused(r, 413, "payload_too_large")


# --- finding 6: nesting -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/sandboxes", "/auth/login"])
def test_deep_nesting_is_a_400_without_a_traceback(edge: Harness, route: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for body in ('{"labels":' + "[" * 1000, '{"labels":' + "[" * 1000 + "]" * 1000 + "}",
                 '{"a":' * 100_000 + "1" + "}" * 100_000):
        r = raw_post(edge, route, body)
        assert_refused(r, field="body")
    assert not [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]


def test_nesting_up_to_the_limit_is_parsed(edge: Harness) -> None:
    sb = spawn(edge)["id"]
    at_limit = '{"cmd":"true","args":' + "[" * 63 + "]" * 63 + "}"  # 64 levels with the object
    error = assert_refused(raw_post(edge, f"/v1/sandboxes/{sb}/exec", at_limit))
    assert "body" not in error["details"]["fieldErrors"]  # parsed; the model refuses a list in args
    over = '{"cmd":"true","args":' + "[" * 64 + "]" * 64 + "}"
    assert_refused(raw_post(edge, f"/v1/sandboxes/{sb}/exec", over), field="body")


# --- finding 10 (input half): path ids by their format ------------------------------------------


BAD_SEGMENTS = ["%09", "%0A", "%7F", "x%3Fa%3Db", "%00", "a%20b", "%C3%A9"]


def test_malformed_context_ids_never_reach_the_agent(edge: Harness) -> None:
    sb = spawn(edge)["id"]
    agent = edge.agent
    agent.calls.clear()
    for segment in BAD_SEGMENTS:
        for method, suffix in (("DELETE", ""), ("POST", "/restart")):
            r = edge.client.request(method, f"/v1/sandboxes/{sb}/code-contexts/{segment}{suffix}",
                                    headers=edge.auth())
            assert_refused(r, 404, "context_not_found")
    assert agent.calls == []


def test_every_path_id_is_checked_by_its_format(edge: Harness) -> None:
    """Derived from the routes: a malformed value of any path parameter is a 404, never forwarded."""
    sb = spawn(edge)["id"]
    good = {"sandbox_id": sb, "pid": "1", "context_id": "ctx_1", "key_id": "key_00000000",
            "user_id": "usr_00000000", "template_id": "tpl_python", "host_id": "local",
            "port": "8000"}
    agent = edge.agent
    checked = 0
    spec = edge.client.get("/openapi.json").json()
    for template, operations in spec["paths"].items():
        params = [part.strip("{}") for part in template.split("/") if part.startswith("{")]
        if not params or template.endswith("/shell"):
            continue
        for param in params:
            for segment in ("%0A", "x%3Fa%3Db", "%7F"):
                path = template
                for name in params:
                    path = path.replace(f"{{{name}}}", segment if name == param else good[name])
                for method in operations:
                    agent.calls.clear()
                    r = edge.client.request(method.upper(), path, headers=edge.auth())
                    assert r.status_code == 404, (method, path, r.text)
                    assert agent.calls == [], (method, path, agent.calls)
                    checked += 1
    assert checked > 40


def test_a_malformed_sandbox_id_on_the_shell_is_a_404(edge: Harness) -> None:
    with pytest.raises(WebSocketDenialResponse) as caught:
        with edge.client.websocket_connect("/v1/sandboxes/sb_%0Ax/shell", headers=edge.auth()):
            pass
    assert caught.value.status_code == 404
    assert caught.value.json()["error"]["code"] == "sandbox_not_found"


# --- finding 12 (input half): strict types, names, frames, URLs ----------------------------------


def test_types_are_strict(edge: Harness) -> None:
    sb = spawn(edge)["id"]
    for body, field in (({"templateId": "tpl_python", "vcpus": True}, "vcpus"),
                        ({"templateId": "tpl_python", "memoryMb": "512"}, "memoryMb"),
                        ({"templateId": "tpl_python", "timeoutSeconds": 1.5}, "timeoutSeconds"),
                        ({"templateId": "tpl_python", "allowInternetAccess": 1}, "allowInternetAccess"),
                        ({"templateId": 7}, "templateId")):
        assert_refused(edge.client.post("/v1/sandboxes", json=body, headers=edge.auth()), field=field)
    assert_refused(edge.client.post(f"/v1/sandboxes/{sb}/timeout", json={"timeoutSeconds": False},
                                    headers=edge.auth()), field="timeoutSeconds")
    # What the published client sends still passes: ints where floats are asked, RFC 3339 times.
    r = edge.client.post(f"/v1/sandboxes/{sb}/exec", json={"cmd": "true", "timeoutSeconds": 5}, headers=edge.auth())
    assert r.status_code == 200, r.text
    r = edge.client.post("/v1/api-keys", json={"name": "ci", "scopes": ["sandboxes:read"],
                                               "expiresAt": "2099-01-01T00:00:00Z"}, headers=edge.auth())
    assert r.status_code == 201, r.text


def test_control_characters_in_names_are_refused(edge: Harness) -> None:
    for name in ("a\x00b", "line\nbreak", "\x7f"):
        r = edge.client.post("/v1/api-keys", json={"name": name, "scopes": ["sandboxes:read"]}, headers=edge.auth())
        assert_refused(r, field="name")
    for labels in ({"a\x00": "v"}, {"k\x1b": "v"}, {"k": "v\x00"}):
        r = edge.client.post("/v1/sandboxes", json={"templateId": "tpl_python", "labels": labels},
                             headers=edge.auth())
        assert_refused(r)
    assert edge.client.get("/v1/sandboxes", headers=edge.auth()).json() == []


def test_a_resize_frame_takes_numbers_only() -> None:
    for frame in ('{"type":"resize","cols":"80","rows":24}', '{"type":"resize","cols":80,"rows":true}',
                  '{"type":"resize","cols":' + "[" * 500 + "]" * 500 + ',"rows":1}',
                  '{"type":"input","data":"' + SURROGATE + '"}'):
        with pytest.raises(BadFrame):
            parse_frame({"type": "websocket.receive", "text": frame})
    assert parse_frame({"type": "websocket.receive", "text": '{"type":"resize","cols":80,"rows":24}'}) is not None


def test_a_long_url_gets_the_envelope(edge: Harness) -> None:
    limit = MAX_URL
    r = edge.client.get("/v1/sandboxes?status=" + "a" * limit, headers=edge.auth())
    assert_refused(r, field="url")
    assert r.headers["x-request-id"].startswith("req_")
    r = edge.client.get("/v1/sandboxes/sb_" + "a" * limit, headers=edge.auth())
    assert_refused(r, field="url")


def test_query_values_are_strict_text(edge: Harness) -> None:
    sb = spawn(edge)["id"]
    for query, field in (("path=/tmp/a%00b", "path"), ("path=%FF", "path"), ("pa%0Ath=x", "pa\\nth")):
        r = edge.client.get(f"/v1/sandboxes/{sb}/stat?{query}", headers=edge.auth())
        assert_refused(r, field=field)
    r = edge.client.get(f"/v1/sandboxes/{sb}/stat?path=%2Ftmp%2Fa+b", headers=edge.auth())
    assert r.status_code == 200, r.text


# --- migration 0008: rows stored before the edge -------------------------------------------------


def test_migration_0008_repairs_stored_surrogates_and_nuls(tmp_path: Path) -> None:
    # SQLite only: PostgreSQL never stored such text (it refuses NULs and lone surrogates).
    for h in make_harness(tmp_path, database=None):
        sb = spawn(h, {"labels": {"name": "x"}})["id"]
        r = h.client.post("/v1/api-keys", json={"name": "ci", "scopes": ["sandboxes:read"]}, headers=h.auth())
        key_id = r.json()["key"]["id"]
    poison = [
        ("UPDATE sandboxes SET labels = :v WHERE id = :id", '{"name": "a\\ud800", "\\udfff": "b\\u0000"}', sb),
        ("UPDATE sandboxes SET envs = :v WHERE id = :id", '{"A": "\\udc00"}', sb),
        ("UPDATE api_keys SET name = :v WHERE id = :id", "c\x00i", key_id),
        ("UPDATE templates SET envs = :v WHERE id = :id", '{"E": "\\ud83d"}', "tpl_python"),
        ("UPDATE templates SET start_cmd = :v WHERE id = :id", "run\x00me", "tpl_python"),
        ("INSERT INTO sandbox_events (sandbox_id, time, level, component, message) "
         "VALUES (:id, '2026-01-01 00:00:00', 'info', 'test', :v)", "bad\x00line", sb),
    ]
    engine = create_engine(f"sqlite:///{tmp_path / 'qbox.db'}")
    try:
        with engine.begin() as conn:
            for statement, value, row_id in poison:
                conn.execute(text(statement), {"v": value, "id": row_id})
            conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0008")
            labels, envs = conn.execute(text("SELECT labels, envs FROM sandboxes WHERE id = :id"), {"id": sb}).one()
            name = conn.execute(text("SELECT name FROM api_keys WHERE id = :id"), {"id": key_id}).scalar_one()
            tpl_envs, start = conn.execute(text("SELECT envs, start_cmd FROM templates WHERE id = 'tpl_python'")).one()
            messages = conn.execute(text("SELECT message FROM sandbox_events WHERE sandbox_id = :id"),
                                    {"id": sb}).scalars().all()
    finally:
        engine.dispose()
    assert json.loads(labels) == {"name": "a\ufffd", "\ufffd": "b\ufffd"}
    assert json.loads(envs) == {"A": "\ufffd"} and json.loads(tpl_envs) == {"E": "\ufffd"}
    assert name == "c\ufffdi" and start == "run\ufffdme"
    assert "bad\ufffdline" in messages and not any("\x00" in m for m in messages)
