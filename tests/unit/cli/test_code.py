"""``qbox sandboxes run-code`` against a scripted API: streamed on a terminal, unary otherwise."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from qbox.cli.code import save_paths
from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox
from tests.unit.sdk.test_code import (
    COMPLETE,
    DISPLAY,
    ERR,
    EXECUTE,
    OUT,
    PNG,
    RAISED,
    RESULT,
    SB,
    STARTED,
    b64,
    sse,
    unary,
)


@pytest.fixture
def cli() -> Cli:
    cli = Cli()
    cli.server.on("GET", SB, reply(200, sandbox("sb_1")))
    return cli


def test_on_a_terminal_output_streams(cli: Cli) -> None:
    cli.server.on("POST", EXECUTE, sse(STARTED, OUT, ERR, DISPLAY, RESULT, COMPLETE))
    result = cli("sb", "run-code", "sb_1", "-e", "print(1)", tty=True)
    assert result.exit_code == 0
    assert result.stdout == "1\n2\n"
    assert "warn\n" in result.stderr and "--save-display" in result.stderr
    seen = cli.server.last("POST", EXECUTE)
    assert seen.body == {"code": "print(1)", "timeoutSeconds": 60, "stream": True}
    assert seen.headers["accept"] == "text/event-stream"
    assert "DELETE" not in " ".join(cli.server.targets)  # the sandbox is left running


def test_piped_it_prints_the_execution_as_json(cli: Cli) -> None:
    cli.server.on("POST", EXECUTE, reply(200, unary()))
    result = cli("sb", "run-code", "sb_1", "-e", "6 * 7", "-l", "python", "--env", "A=1", "--timeout", "5")
    assert result.exit_code == 0
    assert cli.server.last("POST", EXECUTE).body == {
        "code": "6 * 7", "language": "python", "env": {"A": "1"}, "timeoutSeconds": 5}
    printed = json.loads(result.stdout)
    assert printed["text"] == "42"
    assert printed["stdout"] == "hello\nno stream means stdout\n" and printed["stderr"] == "careful\n"
    assert printed["error"] is None and printed["timedOut"] is False
    assert (printed["contextId"], printed["language"], printed["executionMs"]) == ("ctx_py", "python", 12)
    display, main = printed["results"]
    assert base64.b64decode(display["data"]["image/png"]) == PNG and not display["isMainResult"]
    assert main["isMainResult"] and main["text"] == "42"


def test_json_on_a_terminal_is_unary_too(cli: Cli) -> None:
    cli.server.on("POST", EXECUTE, reply(200, unary()))
    result = cli("sb", "run-code", "sb_1", "-e", "x", "--json", tty=True)
    assert json.loads(result.stdout)["text"] == "42"
    assert "stream" not in cli.server.last("POST", EXECUTE).body


def test_piped_with_table_output_prints_prose_from_one_request(cli: Cli) -> None:
    cli.server.on("POST", EXECUTE, reply(200, unary()))
    result = cli("-o", "table", "sb", "run-code", "sb_1", "-e", "x")
    assert result.exit_code == 0
    assert result.stdout == "hello\nno stream means stdout\n<Figure>\n42\n"
    assert result.stderr == "careful\n"
    assert "stream" not in cli.server.last("POST", EXECUTE).body


def test_an_execution_error_exits_1(cli: Cli) -> None:
    cli.server.on("POST", EXECUTE, sse(STARTED, OUT, RAISED, COMPLETE))
    result = cli("sb", "run-code", "sb_1", "-e", "1/0", tty=True)
    assert result.exit_code == ExitCode.ERROR
    assert result.stdout == "1\n"
    assert result.stderr == "Traceback\n  line 1\n"
    wire_error = {"name": "ValueError", "value": "bad", "traceback": []}
    cli.server.on("POST", EXECUTE, reply(200, unary(error=wire_error, result=None)))
    cli.server.routes[("POST", EXECUTE)] = [reply(200, unary(error=wire_error, result=None))]
    piped = cli("sb", "run-code", "sb_1", "-e", "x")
    assert piped.exit_code == ExitCode.ERROR
    assert json.loads(piped.stdout)["error"] == wire_error


def test_a_timeout_exits_1(cli: Cli) -> None:
    cli.server.on("POST", EXECUTE, reply(200, unary(result=None, timedOut=True)))
    result = cli("-o", "table", "sb", "run-code", "sb_1", "-e", "while True: pass", "--timeout", "2")
    assert result.exit_code == ExitCode.ERROR
    assert "ran out of time (2s)" in result.stderr


def test_code_from_a_file_or_stdin(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("POST", EXECUTE, reply(200, unary()))
    script = tmp_path / "job.py"
    script.write_text("print('from a file')\n")
    assert cli("sb", "run-code", "sb_1", "-f", str(script)).exit_code == 0
    assert cli.server.last("POST", EXECUTE).body["code"] == "print('from a file')\n"
    assert cli("sb", "run-code", "sb_1", "-f", "-", input="from_dash()").exit_code == 0
    assert cli.server.last("POST", EXECUTE).body["code"] == "from_dash()"
    assert cli("sb", "run-code", "sb_1", input="piped()").exit_code == 0
    assert cli.server.last("POST", EXECUTE).body["code"] == "piped()"


def test_usage_errors(cli: Cli, tmp_path: Path) -> None:
    assert cli("sb", "run-code", "sb_1", stdin_tty=True).exit_code == ExitCode.USAGE  # no code at all
    assert cli("sb", "run-code", "sb_1", "-e", "x", "-f", "y").exit_code == ExitCode.USAGE
    assert cli("sb", "run-code", "sb_1", "-f", str(tmp_path / "missing.py")).exit_code == ExitCode.USAGE
    assert cli("sb", "run-code", "sb_1", "-e", "x", "--env", "NOEQUALS").exit_code == ExitCode.USAGE
    assert cli("sb", "run-code", "sb_1", "-e", "x", "--timeout", "0").exit_code == ExitCode.USAGE
    assert f"POST {EXECUTE}" not in cli.server.targets


def test_language_and_context_together_exit_conflict(cli: Cli) -> None:
    result = cli("sb", "run-code", "sb_1", "-e", "x", "-l", "python", "--context", "ctx_1")
    assert result.exit_code == ExitCode.CONFLICT
    assert json.loads(result.stdout)["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize(
    ("answer", "exit_code"),
    [
        (error(409, "language_not_supported", details={"supportedLanguages": ["python"]}), ExitCode.CONFLICT),
        (error(422, "code_interpreter_disabled"), ExitCode.CONFLICT),
        (error(404, "context_not_found"), ExitCode.NOT_FOUND),
        (error(503, "unavailable"), ExitCode.TRANSIENT),
    ],
)
def test_request_errors_exit_as_elsewhere(cli: Cli, answer: object, exit_code: ExitCode) -> None:
    cli.server.on("POST", EXECUTE, answer)  # type: ignore[arg-type]
    result = cli("sb", "run-code", "sb_1", "-e", "x", tty=True)
    assert result.exit_code == exit_code
    assert result.stderr.startswith("error: ")


def test_save_display_writes_each_image(cli: Cli, tmp_path: Path) -> None:
    svg = {"kind": "output", "output": {"display": {"image/svg+xml": b64("<svg/>")}}}
    cli.server.on("POST", EXECUTE, sse(STARTED, DISPLAY, svg, RESULT, COMPLETE))
    target = tmp_path / "plot.png"
    result = cli("sb", "run-code", "sb_1", "-e", "plot()", "--save-display", str(target), tty=True)
    assert result.exit_code == 0
    assert (tmp_path / "plot-1.png").read_bytes() == PNG
    assert (tmp_path / "plot-2.png").read_bytes() == b"<svg/>"
    assert not target.exists()
    cli.server.routes[("POST", EXECUTE)] = [reply(200, unary())]
    assert cli("sb", "run-code", "sb_1", "-e", "x", "--save-display", str(target)).exit_code == 0
    assert target.read_bytes() == PNG


def test_save_display_without_images_says_so(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("POST", EXECUTE, sse(STARTED, RESULT, COMPLETE))
    result = cli("sb", "run-code", "sb_1", "-e", "1", "--save-display", str(tmp_path / "x.png"), tty=True)
    assert result.exit_code == 0 and "no image" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_save_paths() -> None:
    assert save_paths("out.png", 1) == [Path("out.png")]
    assert save_paths("d/out.png", 2) == [Path("d/out-1.png"), Path("d/out-2.png")]
    assert save_paths("out", 2) == [Path("out-1"), Path("out-2")]
