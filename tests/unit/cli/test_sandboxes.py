"""``qbox sandboxes``: each command against a scripted API."""

from __future__ import annotations

import json

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox

TEMPLATES = [{"id": "tpl_python", "name": "python", "status": "ready"}]
CMDS = "/v1/sandboxes/sb_1/commands"


def test_create_prints_only_the_id(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, TEMPLATES))
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new")))
    result = cli(
        "sandboxes",
        "create",
        "python",
        "--name",
        "web",
        "-m",
        "team=ml",
        "-e",
        "A=1=2",
        "--cpu",
        "2",
        "--memory",
        "1024",
        "--timeout",
        "0",
    )
    assert (result.exit_code, result.stdout) == (0, "sb_new\n")
    post = cli.server.last("POST", "/v1/sandboxes")
    assert post.params == {"wait": "true", "waitTimeoutSec": "120"}
    assert post.body == {
        "templateId": "tpl_python",
        "timeoutSeconds": 0,
        "labels": {"team": "ml", "name": "web"},
        "envs": {"A": "1=2"},
        "vcpus": 2,
        "memoryMb": 1024,
    }


def test_create_with_output_prints_the_sandbox(cli: Cli) -> None:
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new", status="booting")))
    result = cli("sb", "create", "tpl_python", "--no-wait", "--json")
    assert json.loads(result.stdout)["status"] == "booting"
    assert cli.server.seen[0].params == {}
    table = cli("-o", "table", "sb", "create", "tpl_python", "--no-wait")
    assert "Status        booting" in table.stdout


def test_create_rejects_malformed_pairs(cli: Cli) -> None:
    result = cli("sb", "create", "python", "-m", "novalue")
    assert result.exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_create_spawn_failure_exits_1(cli: Cli) -> None:
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new", status="failed")))
    result = cli("sb", "create", "tpl_python", tty=True)
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.startswith("error: spawn_failed: sandbox sb_new ended failed")


def test_list_defaults_to_running(cli: Cli) -> None:
    rows = [sandbox("sb_1", labels={"name": "web"}), sandbox("sb_2")]
    cli.server.on("GET", "/v1/sandboxes", reply(200, rows))
    result = cli("sb", "list", tty=True)
    assert cli.server.seen[0].params == {"status": "running"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "TEMPLATE", "STATUS", "CREATED"]
    assert lines[1].split()[:4] == ["sb_1", "web", "tpl_python", "running"]
    assert lines[2].split()[:4] == ["sb_2", "-", "tpl_python", "running"]


def test_list_filters(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, TEMPLATES))
    cli.server.on("GET", "/v1/sandboxes", reply(200, []))
    cli("sb", "list", "--all")
    assert cli.server.last("GET", "/v1/sandboxes").params == {}
    cli("sb", "list", "--state", "killed", "--template", "python", "--limit", "3")
    assert cli.server.last("GET", "/v1/sandboxes").params == {
        "status": "killed",
        "templateId": "tpl_python",
        "limit": "3",
    }


def test_list_json_is_the_servers_objects(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1", extraField=1)]))
    data = json.loads(cli("sb", "list", "--json", tty=True).stdout)
    assert data[0]["id"] == "sb_1" and data[0]["extraField"] == 1


def test_get_by_name(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_9", labels={"name": "web"})]))
    cli.server.on("GET", "/v1/sandboxes/sb_9", reply(200, sandbox("sb_9", labels={"name": "web"})))
    result = cli("sb", "get", "web", tty=True)
    assert result.exit_code == 0
    assert cli.server.seen[0].params == {}  # the name lookup sees every state
    assert "ID            sb_9" in result.stdout
    assert "Labels        name=web" in result.stdout


def test_get_unknown_name(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, []))
    result = cli("sb", "get", "nope", tty=True)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "no sandbox named 'nope'" in result.stderr


def test_get_ambiguous_name(cli: Cli) -> None:
    twins = [sandbox("sb_1", labels={"name": "x"}), sandbox("sb_2", labels={"name": "x"})]
    cli.server.on("GET", "/v1/sandboxes", reply(200, twins))
    result = cli("sb", "get", "x")
    assert result.exit_code == ExitCode.USAGE
    assert "sb_1, sb_2" in result.stderr


def test_kill_with_yes(cli: Cli) -> None:
    cli.server.on("DELETE", "/v1/sandboxes/sb_1", reply(204))
    cli.server.on("DELETE", "/v1/sandboxes/sb_2", error(409, "sandbox_not_active"))
    result = cli("sb", "kill", "sb_1", "sb_2", "-y", tty=True)
    assert result.exit_code == 0
    assert result.stdout == "killed sb_1\nsb_2 had already ended\n"


def test_kill_refuses_without_confirmation_when_not_interactive(cli: Cli) -> None:
    result = cli("sb", "kill", "sb_1", tty=True)
    assert result.exit_code == ExitCode.DECLINED
    assert result.stderr.startswith("error: declined:")
    assert cli.server.seen == []


def test_kill_asks_on_a_terminal(cli: Cli) -> None:
    cli.server.on("DELETE", "/v1/sandboxes/sb_1", reply(204))
    no = cli("sb", "kill", "sb_1", tty=True, stdin_tty=True, input="n\n")
    assert no.exit_code == ExitCode.DECLINED and cli.server.seen == []
    yes = cli("sb", "kill", "sb_1", tty=True, stdin_tty=True, input="y\n")
    assert yes.exit_code == 0 and "Kill sb_1?" in yes.stderr
    assert cli.server.targets == ["DELETE /v1/sandboxes/sb_1"]


def test_kill_assume_yes_from_the_environment(cli: Cli) -> None:
    cli.server.on("DELETE", "/v1/sandboxes/sb_1", reply(204))
    assert cli("sb", "kill", "sb_1", environ={"QBOX_ASSUME_YES": "1"}).exit_code == 0


def test_kill_reports_each_failure_and_exits_with_the_first(cli: Cli) -> None:
    cli.server.on("DELETE", "/v1/sandboxes/sb_1", error(404, "sandbox_not_found", "gone"))
    cli.server.on("DELETE", "/v1/sandboxes/sb_2", reply(204))
    result = cli("sb", "kill", "sb_1", "sb_2", "-y", "--json")
    assert result.exit_code == ExitCode.NOT_FOUND
    data = json.loads(result.stdout)
    assert data[0]["error"]["code"] == "sandbox_not_found"
    assert data[1] == {"sandbox": "sb_2", "id": "sb_2", "killed": True}


def test_logs(cli: Cli) -> None:
    entries = [
        {
            "time": "2025-01-02T03:04:05.123456Z",
            "level": "info",
            "component": "lifecycle",
            "message": "sandbox running",
        }
    ]
    cli.server.on("GET", "/v1/sandboxes/sb_1/logs", reply(200, entries))
    result = cli("sb", "logs", "sb_1", "--tail", "5", tty=True)
    assert cli.server.seen[0].params == {"tail": "5"}
    assert result.stdout == "2025-01-02 03:04:05  info  lifecycle        sandbox running\n"
    assert json.loads(cli("sb", "logs", "sb_1").stdout) == entries
    assert cli.server.last("GET", "/v1/sandboxes/sb_1/logs").params == {"tail": "50"}


def _scripted_command(cli: Cli, exit_code: int) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    cli.server.on("POST", CMDS, reply(200, {"pid": 4}))
    cli.server.on("GET", CMDS + "/4", reply(200, {"alive": True}), reply(200, {"alive": False, "exitCode": exit_code}))
    cli.server.on(
        "GET",
        CMDS + "/4/logs",
        reply(200, {"stdout": "one\n", "stderr": ""}),
        reply(200, {"stdout": "one\ntwo\n", "stderr": "warn\n"}),
    )


def test_exec_streams_output_and_exits_with_the_remote_code(cli: Cli) -> None:
    _scripted_command(cli, 3)
    result = cli("sb", "exec", "sb_1", "-C", "/srv", "-e", "K=v", "--", "ls", "-la")
    assert result.exit_code == 3
    assert (result.stdout, result.stderr) == ("one\ntwo\n", "warn\n")
    assert cli.server.last("POST", CMDS).body == {
        "cmd": "ls",
        "args": ["-la"],
        "cwd": "/srv",
        "env": {"K": "v"},
    }


def test_exec_json(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    cli.server.on("POST", CMDS, reply(200, {"pid": 4}))
    cli.server.on("GET", CMDS + "/4", reply(200, {"alive": False, "exitCode": 0}))
    cli.server.on("GET", CMDS + "/4/logs", reply(200, {"stdout": "out\n", "stderr": "err\n"}))
    result = cli("sb", "exec", "sb_1", "--json", "--", "true")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"exitCode": 0, "stdout": "out\n", "stderr": "err\n"}


def test_exec_needs_a_running_sandbox(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1", status="killed")))
    result = cli("sb", "exec", "sb_1", "--", "true")
    assert result.exit_code == ExitCode.CONFLICT


def test_exec_timeout_exits_1(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    cli.server.on("POST", CMDS, reply(200, {"pid": 4}))
    cli.server.on("GET", CMDS + "/4", reply(200, {"alive": True}))
    cli.server.on("GET", CMDS + "/4/logs", reply(200, {"stdout": ""}))
    cli.server.on("DELETE", CMDS + "/4", reply(204))
    result = cli("sb", "exec", "sb_1", "--timeout", "1", "--", "sleep", "9", tty=True)
    assert result.exit_code == ExitCode.ERROR
    assert "error: command_timeout" in result.stderr
    assert cli.server.last("DELETE", CMDS + "/4").params == {"signal": "9"}


def test_exec_without_a_command_is_a_usage_error(cli: Cli) -> None:
    assert cli("sb", "exec", "sb_1").exit_code == ExitCode.USAGE


def test_create_passes_disk_and_network_choices(cli: Cli) -> None:
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new")))
    result = cli("sb", "create", "tpl_python", "--disk", "512", "--no-internet")
    assert result.exit_code == 0
    body = cli.server.last("POST", "/v1/sandboxes").body
    assert body["diskSizeMb"] == 512 and body["allowInternetAccess"] is False
    cli("sb", "create", "tpl_python")
    body = cli.server.last("POST", "/v1/sandboxes").body
    assert "diskSizeMb" not in body and "allowInternetAccess" not in body


def test_list_filter_keeps_only_matching_labels(cli: Cli) -> None:
    rows = [sandbox("sb_1", labels={"team": "ml", "env": "dev"}), sandbox("sb_2", labels={"team": "web"}),
            sandbox("sb_3", labels={"team": "ml", "env": "prod"})]
    cli.server.on("GET", "/v1/sandboxes", reply(200, rows))
    data = json.loads(cli("sb", "list", "-f", "team=ml", "--filter", "env=dev", "--json").stdout)
    assert [s["id"] for s in data] == ["sb_1"]
    assert [s["id"] for s in json.loads(cli("sb", "list", "-f", "team=ml", "--json").stdout)] == ["sb_1", "sb_3"]
    assert cli("sb", "list", "-f", "novalue").exit_code == ExitCode.USAGE


def test_kill_where_ends_every_running_match(cli: Cli) -> None:
    rows = [sandbox("sb_1", labels={"job": "ci"}), sandbox("sb_2", labels={"job": "dev"}),
            sandbox("sb_3", labels={"job": "ci"})]
    cli.server.on("GET", "/v1/sandboxes", reply(200, rows))
    cli.server.on("DELETE", "/v1/sandboxes/sb_1", reply(204))
    cli.server.on("DELETE", "/v1/sandboxes/sb_3", reply(204))
    result = cli("sb", "kill", "--where", "job=ci", "-y", tty=True)
    assert result.exit_code == 0, result.stderr
    assert cli.server.last("GET", "/v1/sandboxes").params == {"status": "running"}
    assert [t for t in cli.server.targets if t.startswith("DELETE")] == [
        "DELETE /v1/sandboxes/sb_1", "DELETE /v1/sandboxes/sb_3"]
    assert result.stdout == "killed sb_1\nkilled sb_3\n"


def test_kill_needs_targets_or_where_but_not_both(cli: Cli) -> None:
    assert cli("sb", "kill", "-y").exit_code == ExitCode.USAGE
    assert cli("sb", "kill", "sb_1", "--where", "a=b", "-y").exit_code == ExitCode.USAGE
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1", labels={"a": "c"})]))
    nothing = cli("sb", "kill", "--where", "a=b", "-y")
    assert nothing.exit_code == 0 and "no running sandbox matches" in nothing.stderr
    assert not [t for t in cli.server.targets if t.startswith("DELETE")]


def test_logs_follow_prints_each_entry_once_until_the_sandbox_ends(cli: Cli) -> None:
    first = {"time": "2025-01-02T03:04:05.000001Z", "level": "info", "component": "lifecycle",
             "message": "sandbox running"}
    second = {"time": "2025-01-02T03:04:05.000001Z", "level": "info", "component": "start",
              "message": "listening"}
    third = {"time": "2025-01-02T03:04:09.000000Z", "level": "info", "component": "lifecycle",
             "message": "sandbox killed"}
    cli.server.on("GET", "/v1/sandboxes/sb_1/logs", reply(200, [first]), reply(200, [first, second]),
                  reply(200, [first, second, third]))
    cli.server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")),
                  reply(200, sandbox("sb_1", status="killed")))
    result = cli("sb", "logs", "sb_1", "-f", "--interval", "0.5", tty=True)
    assert result.exit_code == 0, result.stderr
    assert [line.split(None, 4)[-1] for line in result.stdout.splitlines()] == [
        "sandbox running", "listening", "sandbox killed"]
