"""``qbox auth``: identity of the key in use."""

from __future__ import annotations

import json

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply

ME = {"id": "usr_1", "email": "ada@example.com", "apiKeyId": "key_1", "scopes": ["admin"]}


def test_me(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", reply(200, ME))
    result = cli("auth", "me", tty=True)
    assert result.exit_code == 0
    assert "API key  key_1" in result.stdout and "Scopes   admin" in result.stdout
    assert json.loads(cli("auth", "me").stdout) == ME


def test_status(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", reply(200, ME))
    result = cli("auth", "status", tty=True)
    assert result.stdout.startswith("Authenticated to http://qbox.test as ada@example.com.")
    assert "qbox_test…" in result.stdout
    data = json.loads(cli("auth", "status").stdout)
    assert data["authenticated"] is True and data["apiKeyId"] == "key_1"
    assert data["apiKey"] == "qbox_test…"  # never the whole key


def test_status_with_a_revoked_key(cli: Cli) -> None:
    cli.server.on("GET", "/v1/auth/me", error(401, "unauthenticated", "invalid API key"))
    result = cli("auth", "status", tty=True)
    assert result.exit_code == ExitCode.AUTH
    assert result.stderr == "error: unauthenticated: invalid API key (request req_test)\n"
