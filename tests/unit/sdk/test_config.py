"""Where the SDK finds its key and URL, and what it refuses before sending anything."""

from __future__ import annotations

import httpx
import pytest

from qbox import AuthenticationError, ConnectionConfig, QboxError, Sandbox, System
from qbox.sdk._config import DEFAULT_BASE_URL, resolve
from tests.unit.sdk.fakes import API_KEY, FakeServer, reply, sandbox


def test_defaults() -> None:
    config = resolve(ConnectionConfig(), {})
    assert config.base_url == DEFAULT_BASE_URL == "http://127.0.0.1:8080"
    assert config.api_key is None
    assert config.request_timeout == 30.0
    assert config.max_retries == 3


def test_environment_names() -> None:
    env = {"QBOX_API_KEY": "qbox_a", "QBOX_BASE_URL": "https://q.example/", "TOKEN": "qbox_b"}
    config = resolve(ConnectionConfig(), env)
    assert (config.api_key, config.base_url) == ("qbox_a", "https://q.example")


def test_curl_style_names_from_the_api_reference() -> None:
    config = resolve(ConnectionConfig(), {"TOKEN": "qbox_t", "QBOX": "https://q.example"})
    assert (config.api_key, config.base_url) == ("qbox_t", "https://q.example")


def test_generic_names_are_taken_only_when_they_look_right() -> None:
    config = resolve(ConnectionConfig(), {"TOKEN": "ghp_github", "QBOX": "1"})
    assert config.api_key is None
    assert config.base_url == DEFAULT_BASE_URL


def test_keyword_beats_config_beats_environment() -> None:
    env = {"QBOX_API_KEY": "qbox_env", "QBOX_REQUEST_TIMEOUT": "7", "QBOX_MAX_RETRIES": "1"}
    config = resolve(ConnectionConfig(api_key="qbox_cfg").merged(api_key="qbox_kw"), env)
    assert config.api_key == "qbox_kw"
    assert resolve(ConnectionConfig(api_key="qbox_cfg"), env).api_key == "qbox_cfg"
    assert (config.request_timeout, config.max_retries) == (7.0, 1)


def test_bad_environment_number_is_a_config_error() -> None:
    with pytest.raises(QboxError) as info:
        resolve(ConnectionConfig(), {"QBOX_REQUEST_TIMEOUT": "soon"})
    assert info.value.code == "invalid_config"


def test_environment_is_read_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    monkeypatch.setenv("QBOX_API_KEY", API_KEY)
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    config = server.config(api_key=None)
    assert Sandbox.get_info("sb_1", config=config).id == "sb_1"
    assert server.seen[0].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(("key", "reason"), [(None, "missing_api_key"), ("sk_live_123", "malformed_api_key")])
def test_key_problems_are_caught_before_any_request(server: FakeServer, key: str | None, reason: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        Sandbox.list(config=server.config(api_key=key))
    assert info.value.details["reason"] == reason
    assert server.seen == []


def test_system_info_needs_no_key(server: FakeServer) -> None:
    server.on("GET", "/v1/system", reply(200, {"version": "1.1.0"}))
    assert System.info(config=server.config(api_key=None)).version == "1.1.0"
    assert "authorization" not in server.seen[0].headers


def test_base_url_path_prefix_is_kept(server: FakeServer) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"version": "1"})

    config = ConnectionConfig(base_url="http://h.example/qbox/", transport=httpx.MockTransport(handler))
    System.info(config=config)
    assert seen == ["http://h.example/qbox/v1/system"]
