"""``-o yaml|prose`` on commands that never heard of them, ``--watch`` on lists (a clock that does not
wait), ``qbox version``, ``qbox completion``, and the global ``-v``/``-q``."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from qbox._version import __version__
from qbox.cli.environment import Environment
from qbox.cli.exit_codes import ExitCode
from qbox.cli.main import main
from qbox.cli.watch import CLEAR_SCREEN
from tests.unit.cli.conftest import Cli
from tests.unit.cli.test_audit import InterruptingClock
from tests.unit.sdk.fakes import FakeClock, reply, sandbox

TEMPLATE = {"id": "tpl_python", "name": "python", "status": "ready", "sizeBytes": 0, "defaultVcpus": 1,
            "defaultMemoryMb": 512, "services": [], "tags": []}
BUILDING = {**TEMPLATE, "id": "tpl_web", "name": "web", "status": "building"}


def watched(cli: Cli, clock: FakeClock, *args: str, tty: bool = False) -> Result:
    env = Environment(environ=cli.environ, transport=httpx.MockTransport(cli.server.handle), clock=clock,
                      stdout_isatty=tty, stdin_isatty=False)
    # color: keep the escape codes a terminal gets (click strips them for anything else).
    return CliRunner().invoke(main, list(args), obj=env, color=tty, catch_exceptions=False)


def test_yaml_serves_every_json_path(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_abc12345", reply(200, sandbox()))
    cli.server.on("GET", "/v1/templates", reply(200, [TEMPLATE]))
    cli.server.on("GET", "/v1/auth/me", reply(200, {"apiKeyId": "key_1", "scopes": ["*"]}))
    got = cli("-o", "yaml", "sandboxes", "get", "sb_abc12345", tty=True)
    assert got.exit_code == 0 and yaml.safe_load(got.stdout) == sandbox()
    assert got.stdout.startswith("id: sb_abc12345\n")  # the server's field order, not sorted
    assert yaml.safe_load(cli("-o", "yaml", "templates", "list").stdout) == [TEMPLATE]
    assert yaml.safe_load(cli("-o", "yaml", "auth", "me").stdout)["apiKeyId"] == "key_1"


def test_yaml_errors_are_yaml_too(cli: Cli) -> None:
    failed = cli("-o", "yaml", "sandboxes", "get", "sb_missing")
    assert failed.exit_code == ExitCode.NOT_FOUND
    assert yaml.safe_load(failed.stdout)["error"]["code"] == "not_found"


def test_prose_and_table_are_for_people(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes/sb_abc12345", reply(200, sandbox()))
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox()]))
    for fmt in ("prose", "table"):
        one = cli("-o", fmt, "sandboxes", "get", "sb_abc12345")  # not a terminal, but asked for
        assert one.stdout.startswith("ID            sb_abc12345\n"), fmt
        listed = cli("-o", fmt, "sandboxes", "list").stdout.splitlines()
        assert listed[0].split() == ["ID", "NAME", "TEMPLATE", "STATUS", "CREATED"] and "sb_abc12345" in listed[1]


def test_watch_redraws_a_terminal_until_ctrl_c(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox()]), reply(200, []), reply(200, [sandbox("sb_b")]))
    clock = InterruptingClock(polls=2)
    done = watched(cli, clock, "sandboxes", "list", "-w", "--watch-interval", "1.5", tty=True)
    assert done.exit_code == 0 and clock.sleeps == [1.5, 1.5]
    screens = done.stdout.split(CLEAR_SCREEN)
    assert screens[0] == "" and len(screens) == 4
    assert "1 sandbox(es), every 1.5 s" in screens[1] and "sb_abc12345" in screens[1]
    assert "0 sandbox(es)" in screens[2] and "sb_b" in screens[3]
    assert cli.server.last("GET", "/v1/sandboxes").params == {"status": "running"}


def test_watch_into_a_pipe_prints_a_json_line_or_a_yaml_document_per_refresh(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [TEMPLATE, BUILDING]), reply(200, [TEMPLATE]))
    piped = watched(cli, InterruptingClock(polls=1), "templates", "list", "--watch")
    assert piped.exit_code == 0 and CLEAR_SCREEN not in piped.stdout
    assert [[t["id"] for t in json.loads(line)] for line in piped.stdout.splitlines()] == [
        ["tpl_python", "tpl_web"], ["tpl_python"]]
    cli.server.routes.clear()
    cli.server.on("GET", "/v1/templates", reply(200, [TEMPLATE, BUILDING]))
    docs = watched(cli, InterruptingClock(polls=2), "-o", "yaml", "templates", "list", "-w", "--status", "building")
    assert [[t["id"] for t in doc] for doc in yaml.safe_load_all(docs.stdout)] == [["tpl_web"]] * 3
    table = watched(cli, InterruptingClock(polls=1), "-o", "table", "templates", "list", "-w")
    assert CLEAR_SCREEN not in table.stdout and table.stdout.count("template(s), every 5 s") == 2


def test_watch_interval_must_be_positive(cli: Cli) -> None:
    assert cli("sandboxes", "list", "-w", "--watch-interval", "0").exit_code == ExitCode.USAGE


def test_version_names_both_sides(cli: Cli) -> None:
    cli.server.on("GET", "/v1/system", reply(200, {"version": "1.1.0", "apiVersion": "v1"}))
    shown = cli("version", tty=True)
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[:2] == [f"qbox {__version__} (client, Python {platform.python_version()})",
                                             "server 1.1.0 at http://qbox.test"]
    data = json.loads(cli("version").stdout)
    assert (data["clientVersion"], data["serverVersion"], data["serverError"]) == (__version__, "1.1.0", None)
    assert data["profile"] == "default" and data["configPath"].endswith("/qbox/config.yaml")


def test_version_never_hard_fails(cli: Cli) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    cli.server.on("GET", "/v1/system", refuse)
    shown = cli("version", tty=True)
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[1].startswith("server: not reachable at http://qbox.test (")
    assert len(cli.server.seen) == 1  # one try, no back-offs
    data = json.loads(cli("version").stdout)
    assert data["serverVersion"] is None and data["serverError"] and data["clientVersion"] == __version__
    insecure = Path(cli.environ["XDG_CONFIG_HOME"]) / "qbox" / "config.yaml"
    insecure.parent.mkdir(parents=True)
    insecure.write_text("profiles: {}\n")
    insecure.chmod(0o644)
    data = json.loads(cli("version").stdout)
    assert data["clientVersion"] == __version__ and "chmod 600" in data["serverError"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(cli: Cli, shell: str) -> None:
    script = cli("completion", shell)
    assert script.exit_code == 0
    assert "_QBOX_COMPLETE" in script.stdout and "qbox" in script.stdout and len(script.stdout) > 200


def test_completion_refuses_other_shells_and_completes_nouns(cli: Cli) -> None:
    assert cli("completion", "powershell").exit_code == ExitCode.USAGE
    env = Environment(environ=cli.environ)
    done = CliRunner().invoke(main, [], obj=env, prog_name="qbox", env={
        "_QBOX_COMPLETE": "bash_complete", "COMP_WORDS": "qbox auth pro", "COMP_CWORD": "2"})
    assert done.exit_code == 0 and done.stdout.splitlines() == ["plain,profiles"]


def test_verbose_logs_requests_and_quiet_drops_notes(cli: Cli) -> None:
    cli.server.on("GET", "/v1/system", reply(200, {"version": "1.1.0"}))
    loud = cli("-v", "system", tty=True)
    assert loud.stdout == "1.1.0\n"
    assert loud.stderr.startswith("* HTTP Request: GET http://qbox.test/v1/system ")
    assert "qbox_testkey" not in loud.stderr
    assert cli("system", tty=True).stderr == ""  # the log handler went with the command
    noted = cli("config", "set", "profiles.a.base_url", "http://a.test")
    assert noted.exit_code == 0
    assert cli("auth", "profiles", "use", "a").stderr == "active profile: a\n"
    assert cli("-q", "auth", "profiles", "use", "a").stderr == ""


def test_no_color_and_yes_are_accepted_globally(cli: Cli) -> None:
    cli.server.on("DELETE", "/v1/sandboxes/sb_abc12345", reply(204))
    done = cli("--no-color", "-y", "sandboxes", "kill", "sb_abc12345", tty=True)
    assert done.exit_code == 0 and done.stdout == "killed sb_abc12345\n"


def test_hosts_cordon_drains_as_the_published_cli_does(cli: Cli) -> None:
    cli.server.on("POST", "/v1/hosts/host_1/drain", reply(200, {"id": "host_1", "status": "draining"}))
    done = cli("hosts", "cordon", "host_1", tty=True)
    assert done.exit_code == 0 and done.stdout == "host_1 is draining\n"
    assert cli.server.targets == ["POST /v1/hosts/host_1/drain"]


def test_show_completion_prints_the_login_shells_script(cli: Cli) -> None:
    fish = cli("--show-completion", environ={"SHELL": "/usr/bin/fish"})
    assert fish.exit_code == 0 and fish.stdout == cli("completion", "fish").stdout
    assert cli("--show-completion", environ={"SHELL": "/bin/csh"}).exit_code == ExitCode.USAGE
