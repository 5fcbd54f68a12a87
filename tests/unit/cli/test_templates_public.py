"""``qbox templates create --public`` and ``qbox templates set-public [--private]``."""

from __future__ import annotations

import json
from typing import Any

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply

ONE = "/v1/templates/tpl_tools"


def template(**extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": "ready", "imageRef": "busybox:1", **extra}


def test_create_public(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template(status="building", public=True)))
    result = cli("templates", "create", "--name", "tools", "--image-ref", "busybox:1", "--public", "--no-wait")
    assert result.exit_code == 0, result.output
    assert cli.server.last("POST", "/v1/templates").body["public"] is True


def test_set_public_and_private_again(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [template()]))
    cli.server.on("PATCH", ONE, reply(200, template(public=True)), reply(200, template(public=False, ownerId="usr_a")))
    result = cli("templates", "set-public", "tools", tty=True)
    assert result.exit_code == 0 and result.stdout == "tpl_tools is public\n"
    assert cli.server.last("PATCH", ONE).body == {"public": True}
    result = cli("templates", "set-public", "tpl_tools", "--private", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ownerId"] == "usr_a"
    assert cli.server.last("PATCH", ONE).body == {"public": False}


def test_a_member_gets_the_forbidden_exit_code(cli: Cli) -> None:
    cli.server.on("PATCH", ONE, error(403, "forbidden", "only an admin may change who sees a template"))
    result = cli("templates", "set-public", "tpl_tools")
    assert result.exit_code == ExitCode.AUTH, result.output
