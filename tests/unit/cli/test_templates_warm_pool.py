"""``qbox templates create --code-interpreter/--warm-pool``, ``qbox templates pool``, the POOL
column and ``From pool`` in ``qbox sandboxes create``."""

from __future__ import annotations

import json
from typing import Any

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox

ONE = "/v1/templates/tpl_tools"
POOL = {"size": 2, "eager": True, "ready": 1, "booting": 1, "claimed": 4}


def template(**extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": "ready", "imageRef": "busybox:1", **extra}


def test_create_with_an_interpreter_and_a_pool(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template(status="building")))
    result = cli("templates", "create", "--name", "tools", "--image-ref", "busybox:1", "--no-wait",
                 "--code-interpreter", "eager", "--warm-pool", "2", "--no-warm-pool-eager")
    assert result.exit_code == 0, result.output
    body = cli.server.last("POST", "/v1/templates").body
    assert body["codeInterpreter"] == "eager" and body["warmPool"] == {"size": 2, "eager": False}


def test_create_without_them_leaves_them_to_the_server(cli: Cli) -> None:
    cli.server.on("POST", "/v1/templates", reply(201, template(status="building")))
    assert cli("templates", "create", "--name", "tools", "--image-ref", "busybox:1", "--no-wait").exit_code == 0
    assert not {"codeInterpreter", "warmPool"} & set(cli.server.last("POST", "/v1/templates").body)


def test_a_negative_pool_or_an_unknown_mode_is_a_usage_error(cli: Cli) -> None:
    base = ("templates", "create", "--name", "tools", "--image-ref", "busybox:1", "--no-wait")
    assert cli(*base, "--warm-pool", "-1").exit_code == ExitCode.USAGE
    assert cli(*base, "--code-interpreter", "sometimes").exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_pool_sets_the_size_and_eager_by_name(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [template()]))
    cli.server.on("PATCH", ONE, reply(200, template(codeInterpreter="lazy", warmPool=POOL)))
    result = cli("templates", "pool", "tools", "--size", "2", "--eager", tty=True)
    assert result.exit_code == 0, result.output
    assert cli.server.last("PATCH", ONE).body == {"warmPool": {"size": 2, "eager": True}}
    assert result.stdout == ("tpl_tools warm pool: 2 (kernels started): 1 ready, 1 booting, 4 claimed; "
                             "code interpreter lazy\n")


def test_pool_changes_only_what_is_given(cli: Cli) -> None:
    cli.server.on("PATCH", ONE, reply(200, template(codeInterpreter="eager", warmPool=POOL)))
    assert cli("templates", "pool", "tpl_tools", "--no-eager").exit_code == 0
    assert cli.server.last("PATCH", ONE).body == {"warmPool": {"eager": False}}
    result = cli("templates", "pool", "tpl_tools", "--code-interpreter", "eager", "--json")
    assert json.loads(result.stdout)["codeInterpreter"] == "eager"
    assert [s.body for s in cli.server.seen if s.method == "PATCH"][-1] == {"codeInterpreter": "eager"}


def test_pool_without_options_shows_it(cli: Cli) -> None:
    cli.server.on("GET", ONE, reply(200, template(warmPool={"size": 0, "eager": True})))
    result = cli("templates", "pool", "tpl_tools", tty=True)
    assert result.exit_code == 0 and "warm pool: none" in result.stdout
    assert "PATCH" not in {s.method for s in cli.server.seen}


def test_a_members_pool_is_refused_readably(cli: Cli) -> None:
    cli.server.on("PATCH", ONE, error(403, "permission_denied", "only an admin may give a template a warm pool"))
    result = cli("templates", "pool", "tpl_tools", "--size", "1", tty=True)
    assert result.exit_code == ExitCode.AUTH and "only an admin" in result.stderr


def test_get_and_list_show_the_pool(cli: Cli) -> None:
    cli.server.on("GET", ONE, reply(200, template(codeInterpreter="lazy", warmPool=POOL)))
    shown = cli("templates", "get", "tpl_tools", tty=True).stdout
    assert "Code interpreter   lazy" in shown and "1 ready, 1 booting, 4 claimed" in shown
    cli.server.on("GET", "/v1/templates", reply(200, [template(warmPool=POOL), template(id="tpl_b", name="b")]))
    table = cli("templates", "list", tty=True).stdout.splitlines()
    assert "POOL" in table[0]
    assert "1/2" in table[1] and "1/2" not in table[2]


def test_sandboxes_create_shows_from_pool(cli: Cli) -> None:
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new", fromPool=True)))
    assert json.loads(cli("sb", "create", "tpl_python", "--json").stdout)["fromPool"] is True
    assert "From pool     yes" in cli("-o", "table", "sb", "create", "tpl_python").stdout
