from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import qbox.agent.main as agent_main
from qbox.agent.joining import MembershipEnded
from qbox.agent.main import advertised_address, bind_unix_socket, joins, parse_listen, run_agent
from qbox.agent.settings import (
    MAX_SANDBOXES_CAP,
    AgentSettings,
    load_or_create_secret,
    parse_labels,
)


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "data")
    path = tmp_path / "data" / "agent-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    assert load_or_create_secret(tmp_path / "data") == secret


def test_an_existing_secret_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "agent-secret").write_text("given\n")
    assert load_or_create_secret(tmp_path) == "given"


def test_paths_derive_from_the_data_dir(tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path)
    assert settings.effective_socket_path == tmp_path / "agent.sock"
    assert settings.runtime_root == tmp_path / "runtime"
    assert AgentSettings(data_dir=tmp_path, listen="0.0.0.0:7000").effective_socket_path is None
    with pytest.raises(ValueError):
        AgentSettings(runtime="docker")


def test_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QBOX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QBOX_AGENT_RUNTIME", "runc")
    settings = AgentSettings.from_env(secret="s")
    assert (settings.data_dir, settings.runtime, settings.secret) == (tmp_path, "runc", "s")


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_listen("[::1]:7000") == ("::1", 7000)
    assert parse_listen(":7000") == ("0.0.0.0", 7000)
    with pytest.raises(ValueError):
        parse_listen("localhost")


def test_unix_socket_is_private(tmp_path: Path) -> None:
    sock = bind_unix_socket(tmp_path / "run" / "agent.sock")
    try:
        mode = os.stat(tmp_path / "run" / "agent.sock").st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        sock.close()


def test_output_cap_and_kill_grace_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from qbox.agent.settings import AgentSettings, parse_size

    monkeypatch.setenv("QBOX_AGENT_OUTPUT_CAP", "2M")
    monkeypatch.setenv("QBOX_AGENT_KILL_GRACE", "1.5")
    settings = AgentSettings.from_env(data_dir="/tmp/qbox-settings-test")
    assert (settings.output_cap_bytes, settings.kill_grace_seconds) == (2 * 1024 * 1024, 1.5)
    assert AgentSettings().output_cap_bytes == 16 * 1024 * 1024
    assert [parse_size(v) for v in ("4096", "512K", "16MiB", "1g", "3MB")] == [
        4096, 512 * 1024, 16 * 1024 ** 2, 1024 ** 3, 3 * 1024 ** 2]
    for bad in ("", "lots", "-1M", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_joining_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("QBOX_JOIN_URL", "https://cp.example:8080")
    monkeypatch.setenv("QBOX_JOIN_TOKEN", "tok-secret")
    monkeypatch.setenv("QBOX_AGENT_ADVERTISE", "http://10.0.0.5:7070")
    monkeypatch.setenv("QBOX_HOST_LABELS", "gpu=true, zone=a")
    monkeypatch.setenv("QBOX_HOST_HEARTBEAT_SECONDS", "2.5")
    monkeypatch.setenv("QBOX_AGENT_MAX_SANDBOXES", "40")
    settings = AgentSettings.from_env(data_dir=tmp_path)
    assert (settings.join_url, settings.join_token, settings.advertise) == (
        "https://cp.example:8080", "tok-secret", "http://10.0.0.5:7070")
    assert settings.labels == {"gpu": "true", "zone": "a"}
    assert (settings.heartbeat_seconds, settings.sandbox_limit) == (2.5, 40)
    assert "tok-secret" not in repr(settings)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_labels(["novalue"])


def test_the_sandbox_limit_defaults_to_the_address_pool_capped() -> None:
    assert AgentSettings().sandbox_limit == MAX_SANDBOXES_CAP  # a /16: 16384 links
    assert AgentSettings(network_pool="10.9.0.0/24").sandbox_limit == 64
    assert AgentSettings(network=False, network_pool="10.9.0.0/28").sandbox_limit == MAX_SANDBOXES_CAP
    with pytest.raises(ValueError):
        AgentSettings(max_sandboxes=0)


def test_the_address_the_control_plane_dials(tmp_path: Path) -> None:
    def address(**given: str) -> str:
        return advertised_address(AgentSettings(data_dir=tmp_path, **given))  # type: ignore[arg-type]

    assert address(listen="10.0.0.5:7070") == "http://10.0.0.5:7070"
    assert address(listen="[fd00::5]:7070") == "http://[fd00::5]:7070"
    assert address(listen="agent-3.internal:7070") == "http://agent-3.internal:7070"
    assert address(listen="0.0.0.0:7070", advertise="https://a3:7070/") == "https://a3:7070"
    for every in ("0.0.0.0:7070", ":7070", "[::]:7070"):
        with pytest.raises(ValueError, match="--advertise"):
            address(listen=every)


def test_an_agent_joins_with_a_url_or_a_host_file(tmp_path: Path) -> None:
    assert not joins(AgentSettings(data_dir=tmp_path))
    assert joins(AgentSettings(data_dir=tmp_path, join_url="http://cp"))
    (tmp_path / "host.json").write_text("{}")
    assert joins(AgentSettings(data_dir=tmp_path))


@pytest.mark.parametrize(("given", "says"), [
    ({"join_url": "http://cp"}, "--listen ADDR:PORT"),
    ({"join_url": "http://cp", "listen": "0.0.0.0:7070"}, "--advertise"),
])
def test_a_joining_agent_that_cannot_be_dialled_stops_with_a_message(
        tmp_path: Path, given: dict[str, str], says: str) -> None:
    with pytest.raises(SystemExit, match=says) as stopped:
        run_agent(AgentSettings(data_dir=tmp_path, **given))  # type: ignore[arg-type]
    assert stopped.value.code != 0


def test_a_refused_membership_ends_the_agent_non_zero(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(settings: AgentSettings) -> None:
        raise MembershipEnded("the control plane refused: bad token")

    monkeypatch.setattr(agent_main, "serve", refused)
    with pytest.raises(SystemExit, match="qbox agent: the control plane refused: bad token"):
        run_agent(AgentSettings(data_dir=tmp_path, join_url="http://cp", listen="10.0.0.5:1"))
