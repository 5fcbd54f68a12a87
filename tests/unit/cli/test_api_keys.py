"""``qbox api-keys`` against a scripted API: listing, the show-once secret, confirmations, rotation."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path

from qbox.cli.exit_codes import ExitCode
from qbox.core.timefmt import from_wire, utcnow
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply
from tests.unit.sdk.test_access import api_key

KEYS = "/v1/api-keys"
CREATED = {"key": api_key("ak_new"), "secret": "qbox_newsecret"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_list_table_json_and_user_filter(cli: Cli) -> None:
    cli.server.on("GET", KEYS, reply(200, [api_key("ak_1"), api_key("ak_2", status="revoked")]))
    table = cli("api-keys", "list", tty=True)
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "PREFIX", "SCOPES"]
    assert "ak_1" in lines[1] and "ada@example.com" in lines[1] and "never" in lines[1]
    assert "revoked" in lines[2]
    assert cli.server.last("GET", KEYS).params == {}
    data = json.loads(cli("api-keys", "list", "--user", "usr_2").stdout)
    assert [k["id"] for k in data] == ["ak_1", "ak_2"]
    assert cli.server.last("GET", KEYS).params == {"userId": "usr_2"}


def test_get_and_not_found(cli: Cli) -> None:
    cli.server.on("GET", KEYS + "/ak_1", reply(200, api_key()))
    result = cli("api-keys", "get", "ak_1", tty=True)
    assert result.exit_code == 0 and "Prefix     qbox_ab12" in result.stdout
    assert json.loads(cli("api-keys", "get", "ak_1", "--json").stdout)["id"] == "ak_1"
    cli.server.on("GET", KEYS + "/ak_x", error(404, "not_found", "no such key"))
    assert cli("api-keys", "get", "ak_x").exit_code == ExitCode.NOT_FOUND


def test_create_prints_the_secret_once_on_stdout(cli: Cli) -> None:
    cli.server.on("POST", KEYS, reply(201, CREATED))
    result = cli("api-keys", "create", "--name", "ci", "--scopes", "sandboxes:read, sandboxes:create,", tty=True)
    assert result.exit_code == 0
    assert result.stdout == "qbox_newsecret\n"
    assert "not shown again" in result.stderr and "ak_new" in result.stderr
    assert cli.server.last("POST", KEYS).body == {"name": "ci", "scopes": ["sandboxes:read", "sandboxes:create"]}


def test_create_json_has_key_and_secret(cli: Cli) -> None:
    cli.server.on("POST", KEYS, reply(201, CREATED))
    result = cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--expires-in", "30")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == CREATED
    expires = from_wire(cli.server.last("POST", KEYS).body["expiresAt"])
    assert abs(expires - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)


def test_create_rejects_empty_scopes_and_bad_expiry_before_sending(cli: Cli) -> None:
    assert cli("api-keys", "create", "--name", "ci", "--scopes", " , ").exit_code == ExitCode.USAGE
    assert cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--expires-in", "0").exit_code == ExitCode.USAGE
    assert cli("api-keys", "create", "--name", "ci").exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_create_output_file_is_0600_and_keeps_the_secret_off_stdout(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("POST", KEYS, reply(201, CREATED))
    target = tmp_path / "key"
    target.write_text("old secret")
    target.chmod(0o644)
    result = cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--output-file", str(target), tty=True)
    assert result.exit_code == 0
    assert target.read_text() == "qbox_newsecret" and _mode(target) == 0o600
    assert result.stdout == "ak_new\n"
    assert "qbox_newsecret" not in result.stdout + result.stderr
    assert os.listdir(tmp_path) == ["key"]  # no temporary file left behind
    as_json = cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--output-file", str(target), "--json")
    assert json.loads(as_json.stdout) == {"key": CREATED["key"], "secretFile": str(target)}


def test_create_refuses_an_unwritable_output_file_before_creating(cli: Cli, tmp_path: Path) -> None:
    result = cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--output-file", str(tmp_path / "no" / "key"))
    assert result.exit_code == ExitCode.USAGE
    assert cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--output-file", str(tmp_path)).exit_code == 2
    assert cli.server.seen == []


def test_revoke_needs_confirmation(cli: Cli) -> None:
    cli.server.on("POST", KEYS + "/ak_1/revoke", reply(200, api_key(status="revoked")))
    declined = cli("api-keys", "revoke", "ak_1", tty=True)
    assert declined.exit_code == ExitCode.DECLINED and declined.stderr.startswith("error: declined:")
    assert cli("api-keys", "revoke", "ak_1", tty=True, stdin_tty=True, input="n\n").exit_code == ExitCode.DECLINED
    assert cli.server.seen == []
    asked = cli("api-keys", "revoke", "ak_1", tty=True, stdin_tty=True, input="y\n")
    assert asked.exit_code == 0 and "Revoke API key ak_1?" in asked.stderr and "revoked ak_1" in asked.stdout
    assert cli("api-keys", "revoke", "ak_1", "-y").exit_code == 0
    assert cli("api-keys", "revoke", "ak_1", environ={"QBOX_ASSUME_YES": "1"}).exit_code == 0
    assert cli.server.targets == ["POST /v1/api-keys/ak_1/revoke"] * 3


def test_declined_in_json_mode_is_a_json_error(cli: Cli) -> None:
    result = cli("api-keys", "revoke", "ak_1", "--json")
    assert result.exit_code == ExitCode.DECLINED
    assert json.loads(result.stdout)["error"] == {
        "code": "declined",
        "message": "not confirmed; nothing revoked (pass -y to skip the question)",
        "exitCode": 10,
    }


def _rotation(cli: Cli) -> None:
    cli.server.on("GET", KEYS + "/ak_old", reply(200, api_key("ak_old", name="deploy", scopes=["templates:read"])))
    cli.server.on("POST", KEYS, reply(201, {"key": api_key("ak_new", name="deploy"), "secret": "qbox_rotated"}))
    cli.server.on("POST", KEYS + "/ak_old/revoke", reply(200, api_key("ak_old", status="revoked")))


def test_rotate_creates_then_revokes_and_shows_the_new_secret(cli: Cli) -> None:
    _rotation(cli)
    result = cli("api-keys", "rotate", "ak_old", "-y", tty=True)
    assert result.exit_code == 0
    assert result.stdout == "qbox_rotated\n"
    assert "ak_new" in result.stderr and "not shown again" in result.stderr
    assert cli.server.targets == ["GET /v1/api-keys/ak_old", "POST /v1/api-keys", "POST /v1/api-keys/ak_old/revoke"]
    assert cli.server.last("POST", KEYS).body == {"name": "deploy", "scopes": ["templates:read"], "userId": "usr_1"}


def test_rotate_json_and_output_file(cli: Cli, tmp_path: Path) -> None:
    _rotation(cli)
    data = json.loads(cli("api-keys", "rotate", "ak_old", "-y", "--json").stdout)
    assert (data["key"]["id"], data["secret"], data["revoked"]) == ("ak_new", "qbox_rotated", "ak_old")
    target = tmp_path / "key"
    result = cli("api-keys", "rotate", "ak_old", "-y", "--output-file", str(target), tty=True)
    assert result.exit_code == 0 and result.stdout == "ak_new\n"
    assert target.read_text() == "qbox_rotated" and _mode(target) == 0o600


def test_rotate_declined_touches_nothing(cli: Cli) -> None:
    assert cli("api-keys", "rotate", "ak_old").exit_code == ExitCode.DECLINED
    assert cli.server.seen == []


def test_rotate_failure_after_create_reports_the_new_key(cli: Cli) -> None:
    _rotation(cli)
    cli.server.routes[("POST", KEYS + "/ak_old/revoke")] = [error(503, "unavailable", "database is down")]
    cli.server.on("POST", KEYS + "/ak_new/revoke", reply(200, api_key("ak_new", status="revoked")))
    result = cli("api-keys", "rotate", "ak_old", "-y", "--json")
    assert result.exit_code == ExitCode.TRANSIENT
    assert json.loads(result.stdout)["error"]["details"] == {"newApiKeyId": "ak_new", "newApiKeyRevoked": True}
    assert "qbox_rotated" not in result.stdout + result.stderr


def test_create_for_another_user(cli: Cli) -> None:
    cli.server.on("POST", KEYS, reply(201, CREATED))
    assert cli("api-keys", "create", "--name", "ci", "--scopes", "a", "--user", "usr_2", "--json").exit_code == 0
    assert cli.server.last("POST", KEYS).body == {"name": "ci", "scopes": ["a"], "userId": "usr_2"}
