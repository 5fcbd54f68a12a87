"""``qbox templates`` and the SDK's ``Templates`` against a scripted API."""

from __future__ import annotations

import json

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply

PYTHON = {
    "id": "tpl_python", "name": "python", "status": "ready", "imageRef": "oci:/cache:latest",
    "imageDigest": "sha256:abc", "sizeBytes": 200 * 1024 * 1024, "defaultVcpus": 1,
    "defaultMemoryMb": 512, "services": [], "tags": ["builtin"], "createdAt": "2026-11-27T14:00:00.000000Z",
    "updatedAt": "2026-11-27T14:00:00.000000Z",
}


def test_list_json_and_table(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [PYTHON]))
    result = cli("templates", "list", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [PYTHON]
    result = cli("templates", "list", tty=True)
    assert result.exit_code == 0
    assert "tpl_python" in result.stdout and "ready" in result.stdout and "200" in result.stdout


def test_list_passes_the_service_filter(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, []))
    assert cli("templates", "list", "--service", "code-interpreter", "--json").exit_code == 0
    assert cli.server.last("GET", "/v1/templates").params == {"service": "code-interpreter"}


def test_get_by_name_resolves_through_the_list(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [PYTHON]))
    result = cli("templates", "get", "python", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["id"] == "tpl_python"


def test_get_by_id_and_not_found_exit_code(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates/tpl_python", reply(200, PYTHON))
    result = cli("templates", "get", "tpl_python", tty=True)
    assert result.exit_code == 0 and "sha256:abc" in result.stdout
    cli.server.on("GET", "/v1/templates/tpl_nope", error(404, "template_not_found", "no such template"))
    result = cli("templates", "get", "tpl_nope")
    assert result.exit_code == ExitCode.NOT_FOUND
    cli.server.on("GET", "/v1/templates", reply(200, [PYTHON]))
    assert cli("templates", "get", "ruby").exit_code == ExitCode.NOT_FOUND
