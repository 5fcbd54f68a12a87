"""``qbox templates create|logs|rebuild|delete`` against a scripted API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply

LOG = "/v1/templates/tpl_tools/build-log"
ONE = "/v1/templates/tpl_tools"
SECRET = "hunter2-secret"


def template(status: str = "building", **extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": status, "imageRef": "python:3.12-slim", **extra}


def text(body: str) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"}, content=body.encode())


def created(cli: Cli) -> dict[str, Any]:
    body = cli.server.last("POST", "/v1/templates").body
    assert isinstance(body, dict)
    return body


def test_steps_keep_the_command_line_order(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    local = tmp_path / "app.cfg"
    local.write_text("debug = true\n")
    local.chmod(0o600)
    result = cli(
        "templates", "create", "--name", "tools", "--image-ref", "python:3.12-slim", "--no-wait",
        "--run", "apt-get update", "--env", "A=1", "--env", "B=2", "--run", "make",
        "--workdir", "/app", "--copy", f"{local}:/app/app.cfg", "--run-as-user", "make test",
        "--env", "C=3", "--user", "app",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "tpl_tools\n"
    assert created(cli)["steps"] == [
        {"run": "apt-get update", "user": "root"},
        {"env": {"A": "1", "B": "2"}},
        {"run": "make", "user": "root"},
        {"workdir": "/app"},
        {"copy": {"path": "/app/app.cfg", "content": "debug = true\n", "encoding": "utf-8", "mode": 0o600,
                  "user": "root"}},
        {"run": "make test", "user": "app"},
        {"env": {"C": "3"}},
    ]  # fmt: skip
    assert created(cli)["user"] == "app"


def test_the_published_clients_flags_mean_the_same(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    result = cli(
        "templates", "create", "--name", "tools", "--image-ref", "img:1", "--cpu", "2", "--memory", "1024",
        "--tag", "a", "--tag", "b", "--warm-state-start-cmd", "serve", "--warm-state-ready-cmd", "probe",
        "--warm-state-timeout", "45", "--enable-ssh", "--no-wait",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert created(cli) == {
        "name": "tools", "imageRef": "img:1", "defaultVcpus": 2, "defaultMemoryMb": 1024, "readyTimeoutS": 45,
        "enableSsh": True, "tags": ["a", "b"], "startCmd": "serve", "readyCmd": "probe",
    }  # fmt: skip
    result = cli(
        "templates", "create", "--name", "tools", "--image-ref", "img:1", "--start-cmd", "s", "--ready-cmd", "r",
        "--ready-timeout", "5", "--disk", "4096", "--runtime", "runsc", "--no-internet", "--no-wait",
    )  # fmt: skip
    body = created(cli)
    assert (body["startCmd"], body["readyCmd"], body["readyTimeoutS"]) == ("s", "r", 5)
    assert (body["defaultDiskMb"], body["runtime"], body["allowInternetAccess"]) == (4096, "runsc", False)


def test_wait_streams_the_log_to_stderr_and_keeps_json_clean(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    cli.server.on("GET", LOG, text("pulling docker://img:1\nstep 1/1: run (root): echo hi\nhi\n"))
    cli.server.on("GET", ONE, reply(200, template("ready")))
    result = cli("templates", "create", "--name", "tools", "--image-ref", "img:1", "--run", "echo hi", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "ready"
    assert result.stderr.splitlines() == ["pulling docker://img:1", "step 1/1: run (root): echo hi", "hi"]
    assert cli.server.last("GET", LOG).params == {"follow": "true"}


def test_a_failed_build_exits_1_with_its_error(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    cli.server.on("GET", LOG, text("build failed: step 1/1 (run: false) exited with code 1\n"))
    cli.server.on("GET", ONE, reply(200, template("failed", buildError="step 1 (run: false) failed with exit code 1")))
    result = cli("templates", "create", "--name", "tools", "--image-ref", "img:1", "--run", "false", tty=True)
    assert result.exit_code == ExitCode.ERROR
    assert "error: build_failed: template tools failed to build: step 1 (run: false)" in result.stderr
    assert result.stdout == ""
    result = cli("templates", "create", "--name", "tools", "--image-ref", "img:1", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["details"]["buildError"].startswith("step 1 (run: false)")


def test_a_wait_that_runs_out_exits_124(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    cli.server.on("GET", LOG, text("pulling\n"))
    cli.server.on("GET", ONE, reply(200, template()))
    result = cli("templates", "create", "--name", "tools", "--image-ref", "img:1", "--wait-timeout", "10", tty=True)
    assert result.exit_code == 124
    assert "error: build_timeout:" in result.stderr and "still building after 10s" in result.stderr
    result = cli("templates", "create", "--name", "tools", "--image-ref", "img:1", "--wait-timeout", "5", "--json")
    assert result.exit_code == 124 and json.loads(result.stdout)["error"]["exitCode"] == 124


def test_registry_password_comes_from_stdin_and_is_never_printed(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    cli.server.on("GET", LOG, text("pulling\n"))
    cli.server.on("GET", ONE, reply(200, template("failed", buildError="pull failed: unauthorized")))
    result = cli(
        "templates", "create", "--name", "tools", "--image-ref", "reg.example/team/img:1",
        "--registry-username", "robot", "--registry-password-stdin", "--json", input=SECRET + "\n",
    )  # fmt: skip
    assert result.exit_code == 1
    assert created(cli)["registryCredentials"] == {"username": "robot", "password": SECRET}
    assert SECRET not in result.stdout and SECRET not in result.stderr
    result = cli("templates", "create", "--name", "t", "--image-ref", "i", "--registry-username", "robot")
    assert result.exit_code == ExitCode.USAGE


def test_logs_by_name_whole_and_followed(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [template("ready")]))
    cli.server.on("GET", LOG, text("one\ntwo\n"))
    result = cli("templates", "logs", "tools")
    assert result.exit_code == 0 and result.stdout == "one\ntwo\n"
    assert cli.server.last("GET", LOG).params == {}
    result = cli("templates", "logs", "tools", "-f")
    assert result.exit_code == 0 and result.stdout == "one\ntwo\n"
    assert cli.server.last("GET", LOG).params == {"follow": "true"}
    assert cli("templates", "logs", "nope").exit_code == ExitCode.NOT_FOUND


def test_delete_asks_first_and_resolves_names(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [template("ready")]))
    cli.server.on("DELETE", ONE, reply(204))
    assert cli("templates", "delete", "tools").exit_code == ExitCode.DECLINED
    assert "DELETE " + ONE not in cli.server.targets
    result = cli("templates", "delete", "tools", "-y")
    assert result.exit_code == 0 and cli.server.targets[-1] == "DELETE " + ONE
    cli.server.on("DELETE", "/v1/templates/tpl_python", error(409, "conflict", "built-in template"))
    assert cli("templates", "delete", "tpl_python", "-y").exit_code == ExitCode.CONFLICT


def test_rebuild_waits_like_create(cli: Cli) -> None:
    cli.server.on("POST", ONE + "/rebuild", reply(202, template()))
    cli.server.on("GET", LOG, text("pulling\n"))
    cli.server.on("GET", ONE, reply(200, template("ready")))
    result = cli("templates", "rebuild", "tpl_tools")
    assert result.exit_code == 0 and result.stdout == "tpl_tools\n" and result.stderr == "pulling\n"
    result = cli("templates", "rebuild", "tpl_tools", "--no-wait", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "building"


def test_list_filters_by_status_and_get_shows_the_build(cli: Cli) -> None:
    ready = template("ready", steps=[{"run": "make", "user": "root"}], user="app", startCmd="serve")
    cli.server.on("GET", "/v1/templates", reply(200, [ready, {**template("failed"), "id": "tpl_b", "name": "b"}]))
    result = cli("templates", "list", "--status", "failed", "--json")
    assert [t["id"] for t in json.loads(result.stdout)] == ["tpl_b"]
    result = cli("templates", "get", "tools", tty=True)
    assert result.exit_code == 0
    assert "1. run (root): make" in result.stdout and "serve" in result.stdout and "app" in result.stdout
