"""``qbox agent --ca-cert FILE`` / ``--ca-hash sha256:HEX`` (and their environment twins) reach
the agent's settings; a fingerprint that is not one is a usage error before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import qbox.agent.main
from qbox.agent.settings import AgentSettings
from qbox.cli.serve import agent

HEX = "3e4c22c07eface7b26c83789f945feef3b51e3fea02ddbbdcabc5b4c16831112"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[AgentSettings]:
    runs: list[AgentSettings] = []
    monkeypatch.setattr(qbox.agent.main, "run_agent", runs.append)
    for name in ("QBOX_JOIN_URL", "QBOX_JOIN_TOKEN", "QBOX_JOIN_CA_CERT", "QBOX_JOIN_CA_HASH"):
        monkeypatch.delenv(name, raising=False)
    return runs


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(agent, ["--data-dir", str(tmp_path), "--listen", "10.0.0.5:7070",
                                        "--join", "https://cp.example", "--token", "t", *args])
    return result.exit_code, result.output


def test_the_ca_options_become_settings(tmp_path: Path, started: list[AgentSettings]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    # OpenSSL's spelling is read too, and kept in the canonical one.
    openssl = ":".join(HEX[i:i + 2] for i in range(0, 64, 2)).upper()
    assert run(tmp_path, "--ca-cert", str(ca), "--ca-hash", openssl)[0] == 0
    assert (started[0].ca_cert, started[0].ca_hash) == (ca, f"sha256:{HEX}")


def test_the_environment_twins(tmp_path: Path, started: list[AgentSettings],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBOX_JOIN_CA_CERT", "/etc/qbox/ca.pem")
    monkeypatch.setenv("QBOX_JOIN_CA_HASH", f"sha256:{HEX}")
    assert run(tmp_path)[0] == 0
    assert (started[0].ca_cert, started[0].ca_hash) == (Path("/etc/qbox/ca.pem"), f"sha256:{HEX}")


@pytest.mark.parametrize("args", [("--ca-hash", "sha1:abcd"), ("--ca-cert", "/nonexistent/ca.pem")])
def test_a_bad_fingerprint_or_a_missing_file_is_a_usage_error(tmp_path: Path, started: list[AgentSettings],
                                                                args: tuple[str, str]) -> None:
    code, output = run(tmp_path, *args)
    assert code == 2 and started == [], output
