"""``qbox sandboxes envs``: each command against a scripted API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox
from tests.unit.sdk.test_files import RawBodyServer

ENVS = "/v1/sandboxes/sb_1/envs"
LISTED = {"envs": [{"key": "A", "value": "1", "source": "user", "secret": False},
                   {"key": "API_TOKEN", "value": "********", "source": "user", "secret": True},
                   {"key": "QBOX_SANDBOX_ID", "value": "sb_1", "source": "system", "secret": False}]}


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(server=RawBodyServer())
    cli.environ["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        cli.server.on(method, ENVS, reply(200, LISTED))
    return cli


def test_list_is_masked_unless_revealed(cli: Cli) -> None:
    result = cli("sandboxes", "envs", "list", "sb_1", tty=True)
    assert result.exit_code == 0, result.output
    assert cli.server.last("GET", ENVS).params == {"mask": "true"}
    lines = result.output.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"]
    assert lines[2].split() == ["API_TOKEN", "********", "user"]
    cli("sandboxes", "envs", "list", "sb_1", "--reveal")
    assert cli.server.last("GET", ENVS).params == {}
    result = cli("sandboxes", "envs", "list", "sb_1", "--json")
    assert json.loads(result.output) == LISTED["envs"]


def test_set_replace_secret_delete_clear(cli: Cli) -> None:
    assert cli("sandboxes", "envs", "set", "sb_1", "A=1", "B=x=y").exit_code == 0
    assert cli.server.last("PATCH", ENVS).body == {"envs": {"A": "1", "B": "x=y"}}
    assert cli("sandboxes", "envs", "set", "sb_1", "T=t", "--secret", "--replace").exit_code == 0
    assert cli.server.last("PUT", ENVS).body == {"envs": {"T": "t"}, "secret": True}
    result = cli("sandboxes", "envs", "set", "sb_1", "NOEQUALS")
    assert result.exit_code == ExitCode.USAGE
    assert cli("sandboxes", "envs", "delete", "sb_1", "A", "B").exit_code == 0
    assert cli.server.last("DELETE", ENVS).body == {"keys": ["A", "B"]}
    result = cli("sandboxes", "envs", "clear", "sb_1")  # no terminal to ask on: declined
    assert result.exit_code == ExitCode.DECLINED and "nothing cleared" in result.output
    assert cli("sandboxes", "envs", "clear", "sb_1", "-y").exit_code == 0
    assert cli.server.last("PUT", ENVS).body == {"envs": {}}


def test_upload_a_file_or_stdin(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("POST", ENVS + "/upload", reply(200, {
        "applied": ["A"], "skipped": 1,
        "rejected": [{"line": 3, "reason": "no '=': expected KEY=value"},
                     {"line": 4, "reason": "reserved", "key": "QBOX_X"}]}))
    env_file = tmp_path / ".env"
    env_file.write_text("# c\nA=1\nbad\nQBOX_X=1\n")
    result = cli("sandboxes", "envs", "upload", "sb_1", str(env_file), tty=True)
    assert result.exit_code == 0, result.output
    assert cli.server.last("POST", ENVS + "/upload").body == env_file.read_bytes()
    assert "applied 1, skipped 1, rejected 2" in result.output
    assert "line 4: reserved (QBOX_X)" in result.output
    result = cli("sandboxes", "envs", "upload", "sb_1", "-", "--json", input="LONE")
    assert cli.server.last("POST", ENVS + "/upload").body == b"LONE\n"
    assert json.loads(result.output)["rejected"][1] == {"line": 4, "reason": "reserved", "key": "QBOX_X"}
    result = cli("sandboxes", "envs", "upload", "sb_1", str(tmp_path / "missing"))
    assert result.exit_code == ExitCode.USAGE


def test_errors_keep_their_exit_codes(cli: Cli) -> None:
    cli.server.routes[("PATCH", ENVS)] = [error(400, "validation_error", "bad",
                                                {"fieldErrors": {"envs.QBOX_A": "reserved"}})]
    result = cli("sandboxes", "envs", "set", "sb_1", "QBOX_A=1")
    assert result.exit_code == ExitCode.VALIDATION, result.output
    cli.server.routes[("GET", ENVS)] = [error(404, "sandbox_not_found", "no such sandbox")]
    assert cli("sandboxes", "envs", "list", "sb_1").exit_code == ExitCode.NOT_FOUND
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1", labels={"name": "web"})]))
    cli.server.routes[("GET", ENVS)] = [reply(200, LISTED)]
    assert cli("sandboxes", "envs", "list", "web").exit_code == 0
