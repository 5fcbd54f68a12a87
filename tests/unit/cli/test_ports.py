"""``qbox sandboxes ports …`` and ``sandboxes create -p`` in-process against a scripted API."""

from __future__ import annotations

import json
from typing import Any

import httpx

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox

PORTS = "/v1/sandboxes/sb_1/ports"
URL = "http://8000-sb_1.localhost:8080/"


def port(number: int = 8000, **extra: Any) -> dict[str, Any]:
    return {"port": number, "visibility": "public", "hostHeaderMode": "rewrite",
            "url": f"http://{number}-sb_1.localhost:8080/", "allowedUsers": None, "signedUrl": None,
            "signedUrlExpiresAt": None, **extra}


def test_list_as_a_table_and_as_json(cli: Cli) -> None:
    listed = [port(3000, visibility="private", allowedUsers=[]), port()]
    cli.server.on("GET", PORTS, reply(200, {"ports": listed}))
    table = cli("sandboxes", "ports", "list", "sb_1", tty=True)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PORT", "VISIBILITY", "HOST", "HEADER", "URL"]
    assert lines[2].split() == ["8000", "public", "rewrite", URL]
    assert json.loads(cli("sb", "ports", "list", "sb_1", "--json").stdout) == listed
    # No GET of the sandbox: an ended sandbox's ports can still be listed.
    assert cli.server.targets == [f"GET {PORTS}", f"GET {PORTS}"]


def test_expose_prints_the_url_and_sends_every_option(cli: Cli) -> None:
    cli.server.on("POST", PORTS, reply(201, port()))
    cli.server.on("GET", PORTS + "/8000", reply(200, port()))
    result = cli("sb", "ports", "expose", "sb_1", "8000")
    assert result.exit_code == 0 and result.stdout == URL + "\n"
    assert cli.server.last("POST", PORTS).body == {"port": 8000, "visibility": "public",
                                                   "hostHeaderMode": "rewrite"}
    signed = URL + "?qbox_signature=5.ab"
    cli.server.routes[("GET", PORTS + "/80")] = [reply(200, port(80, visibility="signed_url", signedUrl=signed))]
    cli.server.on("POST", PORTS, reply(201, port(80)))
    result = cli("sb", "ports", "expose", "sb_1", "80", "--visibility", "signed_url", "--ttl", "60", "--force",
                 "--host-header-mode", "preserve")
    assert result.stdout == signed + "\n"
    assert cli.server.last("POST", PORTS).body == {"port": 80, "visibility": "signed_url",
                                                   "hostHeaderMode": "preserve", "signedUrlTtlSeconds": 60,
                                                   "force": True}
    cli("sb", "ports", "expose", "sb_1", "8000", "--visibility", "private", "--allowed-user", "a@b.io",
        "--allowed-user", "usr_1")
    assert cli.server.last("POST", PORTS).body["allowedUsers"] == ["a@b.io", "usr_1"]
    as_json = cli("-o", "json", "sb", "ports", "expose", "sb_1", "8000")
    assert json.loads(as_json.stdout)["url"] == URL
    assert cli("sb", "ports", "expose", "sb_1", "70000").exit_code == ExitCode.USAGE
    assert cli("sb", "ports", "expose", "sb_1", "80", "--visibility", "world").exit_code == ExitCode.USAGE


def test_refusals_exit_with_their_codes(cli: Cli) -> None:
    cli.server.on("POST", PORTS, error(400, "port_reserved", "port 80 is privileged"))
    result = cli("sb", "ports", "expose", "sb_1", "80", tty=True)
    assert result.exit_code == ExitCode.VALIDATION and "privileged" in result.stderr
    cli.server.on("DELETE", PORTS + "/9", error(404, "port_not_found"))
    assert cli("sb", "ports", "unexpose", "sb_1", "9").exit_code == ExitCode.NOT_FOUND


def test_update_unexpose_signed_url_probe(cli: Cli) -> None:
    cli.server.on("PATCH", PORTS + "/8000", reply(200, port(visibility="private", allowedUsers=["a@b.io"])))
    shown = cli("sb", "ports", "update", "sb_1", "8000", "--visibility", "private", "--allowed-user", "a@b.io",
                tty=True)
    assert shown.exit_code == 0 and "a@b.io" in shown.stdout and "private" in shown.stdout
    assert cli.server.last("PATCH", PORTS + "/8000").body == {"visibility": "private", "allowedUsers": ["a@b.io"]}
    cli("sb", "ports", "update", "sb_1", "8000", "--host-header-mode", "preserve")
    assert cli.server.last("PATCH", PORTS + "/8000").body == {"hostHeaderMode": "preserve"}

    cli.server.on("DELETE", PORTS + "/8000", httpx.Response(204))
    gone = cli("sb", "ports", "unexpose", "sb_1", "8000", tty=True)
    assert gone.exit_code == 0 and gone.stdout == "" and "no longer exposed" in gone.stderr

    signed = URL + "?qbox_signature=7.cd"
    cli.server.on("POST", PORTS + "/8000/signed-url", reply(200, port(visibility="signed_url", signedUrl=signed)))
    cli.server.on("GET", PORTS + "/8000", reply(200, port(visibility="signed_url", signedUrl=signed)))
    assert cli("sb", "ports", "signed-url", "sb_1", "8000").stdout == signed + "\n"
    assert cli.server.last("POST", PORTS + "/8000/signed-url").body == {}
    cli("sb", "ports", "signed-url", "sb_1", "8000", "--ttl", "30")
    assert cli.server.last("POST", PORTS + "/8000/signed-url").body == {"ttlSeconds": 30}

    cli.server.on("POST", PORTS + "/8000/probe", reply(200, {"reachable": False}))
    assert cli("sb", "ports", "probe", "sb_1", "8000").stdout == "not reachable\n"
    cli.server.routes[("POST", PORTS + "/8000/probe")] = [reply(200, {"reachable": True})]
    assert json.loads(cli("sb", "ports", "probe", "sb_1", "8000", "--json").stdout) == {"port": 8000,
                                                                                      "reachable": True}


def test_a_name_is_resolved_first(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1", labels={"name": "web"})]))
    cli.server.on("GET", PORTS, reply(200, {"ports": []}))
    assert cli("sb", "ports", "list", "web", "--json").stdout.strip() == "[]"


def test_create_with_ports(cli: Cli) -> None:
    cli.server.on("GET", "/v1/templates", reply(200, [{"id": "tpl_python", "name": "python"}]))
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_1")))
    result = cli("sandboxes", "create", "python", "-p", "8000", "--port", "80", "-p", "3000:private")
    assert result.exit_code == 0, result.output
    assert cli.server.last("POST", "/v1/sandboxes").body["ports"] == [
        {"port": 8000, "visibility": "public", "hostHeaderMode": "rewrite"},
        {"port": 80, "visibility": "public", "hostHeaderMode": "rewrite", "force": True},
        {"port": 3000, "visibility": "private", "hostHeaderMode": "rewrite"}]
    for bad in ("0", "x", "8000:world", "65536"):
        assert cli("sandboxes", "create", "python", "-p", bad).exit_code == ExitCode.USAGE, bad
