"""``qbox templates create --host-selector`` and ``qbox templates set-host-selector``."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import reply

ONE = "/v1/templates/tpl_tools"


def template(**extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": "ready", "imageRef": "busybox:1", **extra}


def test_create_with_a_selector(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template(status="building")))
    result = cli("templates", "create", "--name", "tools", "--image-ref", "busybox:1", "--no-wait",
                 "--host-selector", "gpu=true", "--host-selector", "zone=eu-1/b")
    assert result.exit_code == 0, result.output
    assert cli.server.last("POST", "/v1/templates").body["hostSelector"] == {"gpu": "true", "zone": "eu-1/b"}


def test_a_selector_without_a_value_is_a_usage_error(cli: Cli) -> None:
    result = cli("templates", "create", "--name", "tools", "--image-ref", "busybox:1", "--no-wait",
                 "--host-selector", "gpu")
    assert result.exit_code == 2 and "LABEL=VALUE" in result.output
    assert "POST /v1/templates" not in cli.server.targets


def test_set_and_clear_the_selector(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [template()]))
    cli.server.on("PATCH", ONE, reply(200, template(hostSelector={"gpu": "true"})),
                  reply(200, template(hostSelector={})))
    result = cli("templates", "set-host-selector", "tools", "gpu=true", tty=True)
    assert result.exit_code == 0 and result.stdout == "tpl_tools runs on hosts with gpu=true\n"
    assert cli.server.last("PATCH", ONE).body == {"hostSelector": {"gpu": "true"}}
    result = cli("templates", "set-host-selector", "tpl_tools", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["hostSelector"] == {}
    assert cli.server.last("PATCH", ONE).body == {"hostSelector": {}}


def test_get_shows_the_selector(cli: Cli) -> None:
    cli.server.on("GET", ONE, reply(200, template(hostSelector={"gpu": "true"})))
    result = cli("templates", "get", "tpl_tools", tty=True)
    assert result.exit_code == 0 and "gpu" in result.stdout
