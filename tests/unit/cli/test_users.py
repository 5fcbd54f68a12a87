"""``qbox users`` against a scripted API: passwords from stdin only, confirmation before disabling."""

from __future__ import annotations

import json

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply
from tests.unit.sdk.test_access import user

USERS = "/v1/users"


def test_add_prints_the_id_and_sends_no_password_by_default(cli: Cli) -> None:
    cli.server.on("POST", USERS, reply(201, user()))
    result = cli("users", "add", "bob@example.com", tty=True)
    assert (result.exit_code, result.stdout) == (0, "usr_2\n")
    assert cli.server.last("POST", USERS).body == {"email": "bob@example.com", "role": "member"}


def test_add_reads_the_password_from_stdin(cli: Cli) -> None:
    cli.server.on("POST", USERS, reply(201, user(role="admin", hasPassword=True)))
    result = cli("users", "add", "eve@example.com", "--role", "admin", "--password-stdin", "--json", input="pa ss\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["hasPassword"] is True
    assert cli.server.last("POST", USERS).body == {"email": "eve@example.com", "role": "admin", "password": "pa ss"}


def test_add_rejects_an_empty_password_and_an_unknown_role(cli: Cli) -> None:
    assert cli("users", "add", "a@b.c", "--password-stdin", input="\n").exit_code == ExitCode.USAGE
    assert cli("users", "add", "a@b.c", "--role", "root").exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_add_forbidden_exits_3(cli: Cli) -> None:
    cli.server.on("POST", USERS, error(403, "forbidden", "admins only"))
    result = cli("users", "add", "a@b.c", tty=True)
    assert result.exit_code == ExitCode.AUTH and "admins only" in result.stderr


def test_list_and_get(cli: Cli) -> None:
    cli.server.on("GET", USERS, reply(200, [user(), user("usr_3", email="eve@example.com", role="admin")]))
    cli.server.on("GET", USERS + "/usr_2", reply(200, user()))
    lines = cli("users", "list", tty=True).stdout.splitlines()
    assert lines[0].split() == ["ID", "EMAIL", "ROLE", "STATUS", "PASSWORD", "CREATED"]
    assert lines[1].split()[:5] == ["usr_2", "bob@example.com", "member", "active", "no"]
    assert [u["id"] for u in json.loads(cli("users", "list").stdout)] == ["usr_2", "usr_3"]
    assert "Email     bob@example.com" in cli("users", "get", "usr_2", tty=True).stdout
    assert json.loads(cli("users", "get", "usr_2").stdout) == user()


def test_disable_asks_first(cli: Cli) -> None:
    cli.server.on("POST", USERS + "/usr_2/disable", reply(200, user(status="disabled")))
    assert cli("users", "disable", "usr_2", tty=True).exit_code == ExitCode.DECLINED
    assert cli.server.seen == []
    asked = cli("users", "disable", "usr_2", tty=True, stdin_tty=True, input="y\n")
    assert asked.exit_code == 0 and "sessions are revoked too" in asked.stderr
    assert asked.stdout == "disabled usr_2 (bob@example.com)\n"
    assert json.loads(cli("users", "disable", "usr_2", "-y", "--json").stdout)["status"] == "disabled"


def test_set_password_only_from_stdin(cli: Cli) -> None:
    cli.server.on("PUT", USERS + "/usr_2/password", reply(204))
    assert cli("users", "set-password", "usr_2").exit_code == ExitCode.USAGE
    assert cli.server.seen == []
    result = cli("users", "set-password", "usr_2", "--password-stdin", input="n3w\r\n", tty=True)
    assert (result.exit_code, result.stdout) == (0, "password set for usr_2\n")
    assert cli.server.last("PUT", USERS + "/usr_2/password").body == {"password": "n3w"}
    as_json = cli("users", "set-password", "usr_2", "--password-stdin", input="x")
    assert json.loads(as_json.stdout) == {"id": "usr_2", "hasPassword": True}
