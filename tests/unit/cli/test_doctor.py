"""``qbox doctor``: the published probe sequence (WIRE_PROTOCOL.md §8.5) and qbox's own checks, against
the real control plane over a real agent app (the fake runtime), and failures against a scripted API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from qbox.cli.environment import Environment
from qbox.cli.exit_codes import ExitCode
from qbox.cli.main import main
from qbox.core.timefmt import to_wire, utcnow
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import FakeClock, error, reply, sandbox
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key

PUBLISHED_SEQUENCE = ["control plane reachable", "control plane version", "api key recognized", "hosts registered",
                      "a host accepting sandboxes", "a template is ready", "test sandbox spawn",
                      "test code execution", "test sandbox kill"]
OURS = ["host agents reachable", "runtime", "registry"]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)  # the CLI's side: one database is enough


def qbox(h: Harness, *args: str, key: str | None = None) -> Result:
    env = Environment(
        environ={"QBOX_API_KEY": key or h.admin_key, "QBOX_BASE_URL": "http://testserver", "QBOX_MAX_RETRIES": "0",
                 "XDG_CONFIG_HOME": str(h.settings.data_dir / "client-config")},
        transport=httpx.MockTransport(lambda request: h.client.send(request)),
        clock=FakeClock(), stdout_isatty=False, stdin_isatty=False,
    )
    return CliRunner().invoke(main, list(args), obj=env, catch_exceptions=False)


def checks(result: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def live_sandboxes(h: Harness) -> list[dict[str, Any]]:
    listed = h.client.get("/v1/sandboxes", headers=h.auth())
    assert listed.status_code == 200
    return [s for s in listed.json() if s["status"] not in ("killed", "ended", "failed", "timeout")]


def test_a_plain_doctor_passes_every_check_against_the_real_app(harness: Harness) -> None:
    done = qbox(harness, "-o", "table", "doctor")
    assert done.exit_code == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "Checking http://testserver (profile default)…" and lines[-1] == "all checks passed."
    names = [line.split("  (")[0][4:] for line in lines[1:-1] if line.startswith("  ")]
    published = [n for n in names if n in PUBLISHED_SEQUENCE]
    assert published == PUBLISHED_SEQUENCE  # the published CLI's order
    assert names == PUBLISHED_SEQUENCE[:6] + OURS + PUBLISHED_SEQUENCE[6:]
    assert all(line.startswith("  ✓ ") for line in lines[1:-1]), done.stdout
    assert "fake" in done.stdout and "1 heartbeating" in done.stdout  # the runtime the host reports
    assert "none configured; not needed with one host" in done.stdout
    assert live_sandboxes(harness) == []  # the test sandbox was deleted


def test_doctor_as_json_and_without_a_spawn(harness: Harness) -> None:
    done = qbox(harness, "doctor", "--no-spawn")
    assert done.exit_code == 0
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["baseUrl"] == "http://testserver"
    found = checks(done)
    assert found["test sandbox spawn"] == {"name": "test sandbox spawn", "ok": None, "detail": "skipped", "hint": ""}
    assert "test sandbox kill" not in found and found["runtime"]["ok"] is True
    quick = checks(qbox(harness, "doctor", "--quick", "--skip", "hosts", "--skip", "templates"))
    assert list(quick) == ["control plane reachable", "control plane version", "api key recognized",
                           "test sandbox spawn"]
    assert live_sandboxes(harness) == []


def test_a_members_key_skips_the_operator_checks(harness: Harness) -> None:
    _, member_key = add_user_with_key(harness.settings.data_dir)
    done = qbox(harness, "doctor", key=member_key)
    found = checks(done)
    assert done.exit_code == 0, done.stdout
    assert found["hosts registered"]["ok"] is None and "hosts:read" in found["hosts registered"]["detail"]
    assert found["test sandbox spawn"]["ok"] is True and found["test sandbox kill"]["ok"] is True


def test_a_down_host_fails_its_check(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    (host,) = harness.client.get("/v1/hosts", headers=harness.auth()).json()
    downed = {**host, "status": "down", "lastHeartbeatAt": to_wire(utcnow().replace(year=2020))}
    original = harness.client.send

    def send(request: httpx.Request, **kw: Any) -> httpx.Response:
        if request.url.path == "/v1/hosts":
            return httpx.Response(200, json=[downed])
        return original(request, **kw)

    monkeypatch.setattr(harness.client, "send", send)
    done = qbox(harness, "-o", "table", "doctor", "--no-spawn")
    assert done.exit_code == 1
    assert f"  ✗ host agents reachable  ({host['hostname']} down, last heartbeat " in done.stdout
    assert "  ✗ a host accepting sandboxes  (0 ready)" in done.stdout
    assert "hint: check that `qbox agent` runs there" in done.stdout
    assert done.stdout.splitlines()[-1] == "2 check(s) failed."


HOST = {"id": "host_1", "hostname": "one", "status": "ready", "runtimes": ["crun", "runsc"],
        "lastHeartbeatAt": "2026-01-01T00:00:00.000000Z"}
READY = {"id": "tpl_a", "name": "a", "status": "ready", "services": []}


def scripted(cli: Cli, *, hosts: list[dict[str, Any]] | None = None, registry: bool | None = False) -> None:
    system: dict[str, Any] = {"version": "1.1.0", "apiVersion": "v1"}
    if registry is not None:
        system["registryConfigured"] = registry
    cli.server.on("GET", "/v1/system", reply(200, system))
    cli.server.on("GET", "/v1/auth/me", reply(200, {"apiKeyId": "key_1", "scopes": ["*"]}))
    cli.server.on("GET", "/v1/hosts", reply(200, [HOST] if hosts is None else hosts))
    cli.server.on("GET", "/v1/templates", reply(200, [{**READY, "id": "tpl_b", "status": "building"}, READY]))


def test_the_spawn_is_the_published_one(cli: Cli) -> None:
    scripted(cli)
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_doc")))
    cli.server.on("DELETE", "/v1/sandboxes/sb_doc", reply(204))
    done = cli("doctor")
    assert done.exit_code == 0, done.stdout
    spawn = cli.server.last("POST", "/v1/sandboxes")
    assert spawn.body == {"templateId": "tpl_a", "timeoutSeconds": 120}  # the first ready template
    assert spawn.params == {"wait": "true", "waitTimeoutSec": "60"}
    assert "POST /v1/sandboxes/sb_doc/code-execute" not in cli.server.targets  # no code interpreter there
    found = checks(done)
    assert found["runtime"]["detail"] == "crun, runsc; gVisor (runsc) on 1 of 1 host(s)"
    assert found["test sandbox kill"]["ok"] is True


def test_a_failed_spawn_still_deletes_what_it_made(cli: Cli) -> None:
    scripted(cli)
    cli.server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_doc", status="failed", endReason="boot_failed")))
    cli.server.on("DELETE", "/v1/sandboxes/sb_doc", reply(204))
    done = cli("doctor")
    assert done.exit_code == 1
    assert checks(done)["test sandbox spawn"]["ok"] is False and checks(done)["test sandbox kill"]["ok"] is True
    assert "DELETE /v1/sandboxes/sb_doc" in cli.server.targets


def test_registry_and_runtime_failures(cli: Cli) -> None:
    scripted(cli, hosts=[HOST, {**HOST, "id": "host_2", "hostname": "two", "runtimes": []}])
    done = cli("doctor", "--quick")
    found = checks(done)
    assert done.exit_code == 1
    assert found["registry"]["ok"] is False and "QBOX_REGISTRY" in found["registry"]["hint"]
    assert found["runtime"]["ok"] is False and found["runtime"]["detail"].startswith("no runtime on two; ")
    cli.server.routes.clear()
    scripted(cli, hosts=[HOST, {**HOST, "id": "host_2"}], registry=True)
    assert checks(cli("doctor", "--quick"))["registry"]["ok"] is True
    cli.server.routes.clear()
    scripted(cli, registry=None)  # a server that does not say
    assert checks(cli("doctor", "--quick"))["registry"]["ok"] is None


def test_an_unreachable_server_stops_at_once(cli: Cli) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    cli.server.on("GET", "/v1/system", refuse)
    done = cli("-o", "table", "doctor")
    assert done.exit_code == 1
    assert "  ✗ control plane reachable" in done.stdout and "hint: check --base-url" in done.stdout
    assert {s.path for s in cli.server.seen} == {"/v1/system"}


def test_a_missing_or_refused_key_stops_after_the_version(cli: Cli) -> None:
    scripted(cli)
    no_key = cli("doctor", environ={"QBOX_API_KEY": ""})
    assert no_key.exit_code == 1
    assert list(checks(no_key)) == ["control plane reachable", "control plane version", "api key recognized"]
    assert "qbox auth login" in checks(no_key)["api key recognized"]["hint"]
    cli.server.routes[("GET", "/v1/auth/me")] = [error(401, "unauthenticated", "invalid API key")]
    refused = cli("doctor")
    assert refused.exit_code == 1 and checks(refused)["api key recognized"]["detail"] == "invalid API key"
    assert "GET /v1/hosts" not in cli.server.targets


def test_skip_takes_only_known_checks(cli: Cli) -> None:
    assert cli("doctor", "--skip", "everything").exit_code == ExitCode.USAGE
