"""``qbox agent``: the joining options reach the agent's settings (the agent itself is not run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import qbox.agent.main
from qbox.agent.settings import AgentSettings
from qbox.cli.serve import agent


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[AgentSettings]:
    runs: list[AgentSettings] = []
    monkeypatch.setattr(qbox.agent.main, "run_agent", runs.append)
    for name in ("QBOX_JOIN_URL", "QBOX_JOIN_TOKEN", "QBOX_AGENT_ADVERTISE", "QBOX_HOST_LABELS"):
        monkeypatch.delenv(name, raising=False)
    return runs


def test_the_join_options_become_settings(tmp_path: Path, started: list[AgentSettings]) -> None:
    result = CliRunner().invoke(agent, [
        "--data-dir", str(tmp_path), "--listen", "10.0.0.5:7070",
        "--join", "https://cp.example", "--token", "tok-abc", "--advertise", "http://a5:7070",
        "--label", "gpu=true", "--label", "zone=b"])
    assert result.exit_code == 0, result.output
    [settings] = started
    assert (settings.join_url, settings.join_token, settings.advertise, settings.listen) == (
        "https://cp.example", "tok-abc", "http://a5:7070", "10.0.0.5:7070")
    assert settings.labels == {"gpu": "true", "zone": "b"}
    assert "tok-abc" not in result.output


def test_the_environment_twins(tmp_path: Path, started: list[AgentSettings],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBOX_JOIN_URL", "https://cp.example")
    monkeypatch.setenv("QBOX_JOIN_TOKEN", "tok-env")
    monkeypatch.setenv("QBOX_HOST_LABELS", "rack=7")
    result = CliRunner().invoke(agent, ["--data-dir", str(tmp_path), "--listen", "10.0.0.5:1"])
    assert result.exit_code == 0, result.output
    assert (started[0].join_url, started[0].join_token, started[0].labels) == (
        "https://cp.example", "tok-env", {"rack": "7"})


def test_a_label_without_a_value_is_refused(tmp_path: Path, started: list[AgentSettings]) -> None:
    result = CliRunner().invoke(agent, ["--data-dir", str(tmp_path), "--label", "gpu"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert started == []
