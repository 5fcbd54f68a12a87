from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qbox.agent.main import bind_unix_socket, parse_listen
from qbox.agent.settings import AgentSettings, load_or_create_secret


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
