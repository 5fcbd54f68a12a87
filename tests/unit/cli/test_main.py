"""The root command: global options, output format, error rendering, exit codes, lazy commands."""

from __future__ import annotations

import json
import sys

import pytest

from qbox.cli.exit_codes import ExitCode, exit_code_for
from qbox.cli.main import main
from qbox.core.errors import (
    AuthenticationError,
    CommandTimeoutError,
    ConnectionFailedError,
    HostNoCapacityError,
    InternalError,
    QboxError,
    SandboxSpawnTimeoutError,
)
from qbox.core.error_codes import error_from_wire
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply


def test_help_lists_nouns_and_lazy_commands_without_importing_them(cli: Cli) -> None:
    before = set(sys.modules)
    result = cli("--help")
    assert result.exit_code == 0
    for name in ("sandboxes", "system", "auth", "up", "server", "agent"):
        assert f"  {name} " in result.stdout
    assert "  sb " not in result.stdout  # an alias, not listed
    assert "qbox.cli.serve" not in set(sys.modules) - before


def test_version(cli: Cli) -> None:
    assert cli("--version").stdout.startswith("qbox, version ")


def test_system_prints_the_version_without_a_key(cli: Cli) -> None:
    cli.server.on("GET", "/v1/system", reply(200, {"version": "1.1.0"}))
    result = cli("system", tty=True, environ={"QBOX_API_KEY": ""})
    assert (result.exit_code, result.stdout) == (0, "1.1.0\n")
    data = json.loads(cli("system").stdout)  # not a TTY: JSON by default
    assert data["version"] == "1.1.0" and data["baseUrl"] == "http://qbox.test"


def test_json_flag_and_output_option_agree(cli: Cli) -> None:
    cli.server.on("GET", "/v1/system", reply(200, {"version": "1.1.0"}))
    assert json.loads(cli("system", "--json", tty=True).stdout)["version"] == "1.1.0"
    assert json.loads(cli("-o", "json", "system", tty=True).stdout)["version"] == "1.1.0"
    assert cli("-o", "table", "system").stdout == "1.1.0\n"


def test_bad_output_format_is_a_usage_error(cli: Cli) -> None:
    assert cli("-o", "xml", "system").exit_code == ExitCode.USAGE


def test_error_line_on_stderr(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", error(404, "sandbox_not_found", "no such sandbox"))
    result = cli("sandboxes", "get", "sb_1", tty=True)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stderr == "error: sandbox_not_found: no such sandbox (request req_test)\n"
    assert result.stdout == ""


def test_error_as_json_on_stdout(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", error(403, "forbidden", "missing scope"))
    result = cli("sb", "get", "sb_1", "--json")
    assert result.exit_code == ExitCode.AUTH
    assert json.loads(result.stdout) == {
        "error": {
            "code": "forbidden",
            "message": "missing scope",
            "status": 403,
            "requestId": "req_test",
            "exitCode": 3,
        }
    }


def test_missing_key_is_an_auth_error(cli: Cli) -> None:
    result = cli("sb", "list", tty=True, environ={"QBOX_API_KEY": ""})
    assert result.exit_code == ExitCode.AUTH
    assert result.stderr.startswith("error: unauthenticated: no API key")
    assert cli.server.seen == []


def test_global_options_override_the_environment(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", reply(200, {"apiKeyId": "key_1", "scopes": []}))
    cli("--api-key", "qbox_flag", "--request-timeout", "5", "auth", "me")
    seen = cli.server.seen[0]
    assert seen.headers["authorization"] == "Bearer qbox_flag"
    assert seen.timeout["read"] == 5


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthenticated", ExitCode.AUTH),
        (403, "forbidden", ExitCode.AUTH),
        (404, "template_not_found", ExitCode.NOT_FOUND),
        (409, "sandbox_not_active", ExitCode.CONFLICT),
        (409, "invalid_argument", ExitCode.CONFLICT),
        (422, "ssh_disabled", ExitCode.CONFLICT),
        (400, "validation_error", ExitCode.VALIDATION),
        (422, "mystery", ExitCode.VALIDATION),
        (429, "rate_limited", ExitCode.RATE_LIMITED),
        (507, "policy_exceeded", ExitCode.QUOTA),
        (503, "host_no_capacity", ExitCode.QUOTA),
        (503, "unavailable", ExitCode.TRANSIENT),
        (503, "code_interpreter_unavailable", ExitCode.TRANSIENT),
        (500, "internal", ExitCode.ERROR),
        (418, "teapot", ExitCode.ERROR),
    ],
)
def test_exit_codes_by_error(status: int, code: str, expected: ExitCode) -> None:
    body = {"error": {"code": code, "message": "m"}}
    assert exit_code_for(error_from_wire(status, body)) is expected


@pytest.mark.parametrize(
    ("error_obj", "expected"),
    [
        (AuthenticationError("no key", status=0), ExitCode.AUTH),
        (ConnectionFailedError("down"), ExitCode.TRANSIENT),
        (HostNoCapacityError("full"), ExitCode.QUOTA),
        (SandboxSpawnTimeoutError("slow"), ExitCode.ERROR),
        (CommandTimeoutError("slow"), ExitCode.ERROR),
        (InternalError("bug"), ExitCode.ERROR),
        (QboxError("x", code="invalid_config", status=0), ExitCode.USAGE),
        (QboxError("x", code="declined", status=0), ExitCode.DECLINED),
    ],
)
def test_exit_codes_of_client_side_errors(error_obj: QboxError, expected: ExitCode) -> None:
    assert exit_code_for(error_obj) is expected


def test_exit_code_values_are_the_documented_ones() -> None:
    assert [int(c) for c in ExitCode] == [*range(11), 124]


def test_lazy_command_is_loaded_when_invoked(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(main.lazy_commands, "up", ("tests.unit.cli.fake_serve:up", "Run it."))  # type: ignore[attr-defined]
    result = cli("up", "--port", "9000")
    assert (result.exit_code, result.stdout) == (0, "fake up on 9000\n")


def test_lazy_command_whose_module_is_missing(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(main.lazy_commands, "up", ("qbox.cli.not_there:up", "Run it."))  # type: ignore[attr-defined]
    result = cli("up", "--anything")
    assert result.exit_code == 1
    assert "pip install 'qbox[server]'" in result.stderr


def test_lazy_command_without_the_server_extra(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "tests.unit.cli.fake_serve_needing_fastapi", raising=False)
    target = ("tests.unit.cli.fake_serve_needing_fastapi:up", "Run it.")
    monkeypatch.setitem(main.lazy_commands, "server", target)  # type: ignore[attr-defined]
    result = cli("server")
    assert result.exit_code == 1
    assert "needs the server components" in result.stderr
    assert "'fastapi'" in result.stderr
