"""The request/response layer: headers, error mapping by code, retries, transport failures."""

from __future__ import annotations

import httpx
import pytest

from qbox import (
    AuthenticationError,
    ConflictError,
    ConnectionFailedError,
    HostNoCapacityError,
    InsufficientStorageError,
    InternalError,
    NotFoundError,
    PermissionDeniedError,
    QboxError,
    RateLimitedError,
    RequestTimeoutError,
    Sandbox,
    SandboxNotActiveError,
    SandboxNotFoundError,
    SshDisabledError,
    TemplateNotReadyError,
    UnavailableError,
    ValidationError,
)
from qbox.sdk._api import RETRY_AFTER_MAX, encode_params, parse_retry_after
from tests.unit.sdk.fakes import API_KEY, FakeServer, error, reply, sandbox

SB = "/v1/sandboxes/sb_1"


def get(server: FakeServer) -> object:
    return Sandbox.get_info("sb_1", config=server.config())


def sleeps(server: FakeServer, config: object) -> list[float]:
    return config.clock.sleeps  # type: ignore[attr-defined,no-any-return]


def test_request_headers(server: FakeServer) -> None:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    get(server)
    headers = server.seen[0].headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("qbox-python/")
    assert "content-type" not in headers


def test_json_body_carries_content_type(server: FakeServer) -> None:
    server.on("POST", SB + "/timeout", reply(200, sandbox("sb_1")))
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    Sandbox.connect("sb_1", config=server.config()).set_timeout(60)
    assert server.last("POST", SB + "/timeout").headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthenticated", AuthenticationError),
        (403, "forbidden", PermissionDeniedError),
        (404, "sandbox_not_found", SandboxNotFoundError),
        (409, "sandbox_not_active", SandboxNotActiveError),
        (409, "sandbox_already_terminated", SandboxNotActiveError),
        (409, "template_not_ready", TemplateNotReadyError),
        (422, "ssh_disabled", SshDisabledError),
        (429, "rate_limited", RateLimitedError),
        (507, "policy_exceeded", InsufficientStorageError),
        (400, "validation_error", ValidationError),
        # the code decides, whatever the status
        (400, "sandbox_not_found", SandboxNotFoundError),
        (500, "host_no_capacity", HostNoCapacityError),
    ],
)
def test_errors_map_by_code(status: int, code: str, cls: type[QboxError]) -> None:
    server = FakeServer().on("GET", SB, error(status, code, "whatever the text says"))
    with pytest.raises(cls) as info:
        Sandbox.get_info("sb_1", config=server.config(max_retries=0))
    assert type(info.value) is cls
    assert info.value.code == code
    assert info.value.status == status
    assert info.value.request_id == "req_test"
    assert info.value.message == "whatever the text says"


def test_message_text_never_decides_the_class(server: FakeServer) -> None:
    server.on("GET", SB, error(409, "conflict", "sandbox not found"))
    with pytest.raises(ConflictError) as info:
        get(server)
    assert not isinstance(info.value, NotFoundError)


@pytest.mark.parametrize(
    ("status", "cls"),
    [(404, NotFoundError), (409, ConflictError), (503, UnavailableError), (502, InternalError)],
)
def test_unknown_codes_fall_back_to_the_status(status: int, cls: type[QboxError]) -> None:
    server = FakeServer().on("GET", SB, error(status, "brand_new_code"))
    with pytest.raises(cls) as info:
        get(server)
    assert info.value.code == "brand_new_code"


def test_non_envelope_error_bodies(server: FakeServer) -> None:
    server.on(
        "GET",
        SB,
        reply(404, {"detail": "Not Found"}),
        httpx.Response(502, text="<html>bad gateway</html>"),
    )
    with pytest.raises(NotFoundError):
        get(server)
    with pytest.raises(InternalError) as info:
        get(server)
    assert "bad gateway" in info.value.message


def test_success_that_is_not_json(server: FakeServer) -> None:
    server.on("GET", SB, httpx.Response(200, text="hello"))
    with pytest.raises(QboxError) as info:
        get(server)
    assert info.value.code == "bad_response"


def test_missing_required_field_is_a_qbox_error(server: FakeServer) -> None:
    server.on("GET", SB, reply(200, {"templateId": "tpl_x"}))
    with pytest.raises(QboxError) as info:
        get(server)
    assert info.value.code == "bad_response"


def test_429_is_retried_after_retry_after(server: FakeServer) -> None:
    server.on(
        "GET",
        SB,
        error(429, "rate_limited", **{"Retry-After": "2"}),
        reply(200, sandbox("sb_1")),
    )
    config = server.config()
    assert Sandbox.get_info("sb_1", config=config).id == "sb_1"
    assert len(server.seen) == 2
    assert sleeps(server, config) == [2.0]


def test_retry_after_is_capped(server: FakeServer) -> None:
    server.on("GET", SB, error(429, "rate_limited", **{"Retry-After": "3600"}), reply(200, sandbox()))
    config = server.config()
    Sandbox.get_info("sb_1", config=config)
    assert sleeps(server, config) == [RETRY_AFTER_MAX]


def test_transient_503_backs_off_exponentially(server: FakeServer) -> None:
    busy = error(503, "host_unavailable", details={"transient": True})
    server.on("GET", SB, busy, busy, busy, reply(200, sandbox("sb_1")))
    config = server.config()
    Sandbox.get_info("sb_1", config=config)
    waits = sleeps(server, config)
    assert len(waits) == 3
    for wait, base in zip(waits, [0.5, 1.0, 2.0], strict=True):
        assert base * 0.75 <= wait <= base * 1.25


def test_forced_transient_code_is_retried_without_details(server: FakeServer) -> None:
    server.on("GET", SB, error(503, "host_no_capacity"), reply(200, sandbox("sb_1")))
    get(server)
    assert len(server.seen) == 2


@pytest.mark.parametrize("status", [503, 500])
def test_non_transient_server_errors_are_not_retried(server: FakeServer, status: int) -> None:
    server.on("GET", SB, error(status, "unavailable" if status == 503 else "internal"))
    with pytest.raises(QboxError):
        get(server)
    assert len(server.seen) == 1


def test_retries_stop_after_max_retries(server: FakeServer) -> None:
    server.on("GET", SB, error(429, "rate_limited", **{"Retry-After": "1"}))
    config = server.config(max_retries=2)
    with pytest.raises(RateLimitedError):
        Sandbox.get_info("sb_1", config=config)
    assert len(server.seen) == 3


def test_connect_errors_are_retried_then_reported(server: FakeServer) -> None:
    server.on("GET", SB, httpx.ConnectError("connection refused"))
    with pytest.raises(ConnectionFailedError) as info:
        get(server)
    assert len(server.seen) == 4
    assert "connection refused" in info.value.message
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_connect_error_then_success(server: FakeServer) -> None:
    server.on("GET", SB, httpx.ConnectError("refused"), reply(200, sandbox("sb_1")))
    assert get(server).id == "sb_1"  # type: ignore[attr-defined]


def test_read_timeout_of_a_post_is_not_resent(server: FakeServer) -> None:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    server.on("POST", SB + "/timeout", httpx.ReadTimeout("slow"))
    sb = Sandbox.connect("sb_1", config=server.config())
    with pytest.raises(RequestTimeoutError):
        sb.set_timeout(10)
    assert server.targets.count(f"POST {SB}/timeout") == 1


def test_read_timeout_of_a_get_is_retried(server: FakeServer) -> None:
    server.on("GET", SB, httpx.ReadTimeout("slow"), reply(200, sandbox("sb_1")))
    get(server)
    assert len(server.seen) == 2


def test_other_transport_failures_are_wrapped(server: FakeServer) -> None:
    server.on("POST", SB + "/timeout", httpx.RemoteProtocolError("peer closed"))
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    sb = Sandbox.connect("sb_1", config=server.config())
    with pytest.raises(ConnectionFailedError):
        sb.set_timeout(10)


def test_encode_params() -> None:
    assert encode_params({"wait": True, "n": 5, "off": False, "skip": None}) == {
        "wait": "true",
        "n": "5",
        "off": "false",
    }


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
