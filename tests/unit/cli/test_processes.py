"""``qbox sandboxes ps``, ``kill-process`` and ``logs --pid [-f]`` against a scripted API."""

from __future__ import annotations

import json

import httpx

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox

CMDS = "/v1/sandboxes/sb_1/commands"
PROCESSES = [
    {"pid": 2, "command": ["sleep", "60"], "startedAt": "2026-01-02T03:04:05.000000Z",
     "alive": True, "exitCode": 0},
    {"pid": 5, "command": ["sh", "-c", "exit 3"], "startedAt": "2026-01-02T03:04:06.000000Z",
     "alive": False, "exitCode": 3},
]


def _sandbox(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))


def test_ps_table_and_json(cli: Cli) -> None:
    _sandbox(cli)
    cli.server.on("GET", CMDS, reply(200, PROCESSES))
    table = cli("sb", "ps", "sb_1", tty=True)
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PID", "ALIVE", "EXIT", "STARTED", "COMMAND"]
    assert lines[1].split() == ["2", "yes", "-", "2026-01-02", "03:04:05", "sleep", "60"]
    assert lines[2].split()[:3] == ["5", "no", "3"] and lines[2].endswith("sh -c exit 3")
    assert json.loads(cli("sb", "ps", "sb_1", "--json").stdout) == PROCESSES
    # Looking at a sandbox's processes leaves it running.
    assert not any(t.startswith("DELETE /v1/sandboxes/sb_1 ") or t == "DELETE /v1/sandboxes/sb_1"
                   for t in cli.server.targets), cli.server.targets


def test_kill_process_by_signal_name_or_number(cli: Cli) -> None:
    _sandbox(cli)
    cli.server.on("DELETE", CMDS + "/2", httpx.Response(204))
    result = cli("sb", "kill-process", "sb_1", "2", tty=True)
    assert result.exit_code == 0 and "process 2" in result.stdout
    as_json = json.loads(cli("sb", "kill-process", "sb_1", "2").stdout)
    assert as_json == {"pid": 2, "signal": 15, "signalled": True}
    assert cli.server.last("DELETE", CMDS + "/2").params == {"signal": "15"}
    assert cli("sb", "kill-process", "sb_1", "2", "--signal", "KILL").exit_code == 0
    assert cli.server.last("DELETE", CMDS + "/2").params == {"signal": "9"}
    assert cli("sb", "kill-process", "sb_1", "2", "-s", "SIGINT").exit_code == 0
    assert cli.server.last("DELETE", CMDS + "/2").params == {"signal": "2"}
    assert cli("sb", "kill-process", "sb_1", "2", "-s", "NOPE").exit_code == ExitCode.USAGE


def test_kill_process_of_an_unknown_pid_exits_not_found(cli: Cli) -> None:
    _sandbox(cli)
    cli.server.on("DELETE", CMDS + "/9", error(404, "process_not_found"))
    result = cli("sb", "kill-process", "sb_1", "9")
    assert result.exit_code == ExitCode.NOT_FOUND


def test_logs_of_a_command(cli: Cli) -> None:
    _sandbox(cli)
    cli.server.on("GET", CMDS + "/5/logs", reply(200, {"stdout": "out\n", "stderr": "err\n"}))
    result = cli("sb", "logs", "sb_1", "--pid", "5")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert cli.server.last("GET", CMDS + "/5/logs").params == {}  # the plain, published call
    as_json = cli("sb", "logs", "sb_1", "--pid", "5", "--json")
    assert json.loads(as_json.stdout) == {"stdout": "out\n", "stderr": "err\n"}


def test_logs_follow_streams_a_command_until_it_ends(cli: Cli) -> None:
    _sandbox(cli)
    body = b"".join(json.dumps(e).encode() + b"\n" for e in [
        {"type": "stdout", "data": "a\n"}, {"type": "stderr", "data": "b\n"},
        {"type": "exit", "exitCode": 0, "signal": 0, "oomKilled": False}])
    cli.server.on("GET", CMDS + "/5/logs",
                  httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body))
    result = cli("sb", "logs", "sb_1", "--pid", "5", "-f")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "a\n", "b\n")
    assert cli.server.last("GET", CMDS + "/5/logs").params["follow"] == "true"
    lines = cli("sb", "logs", "sb_1", "--pid", "5", "-f", "--json").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"stream": "stdout", "text": "a\n"},
                                                    {"stream": "stderr", "text": "b\n"}]


def test_logs_interval_has_a_floor(cli: Cli) -> None:
    assert cli("sb", "logs", "sb_1", "-f", "--interval", "0").exit_code == ExitCode.USAGE
    assert cli.server.seen == []
