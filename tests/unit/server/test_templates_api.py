"""Templates built from OCI images, through the HTTP API, over the real agent (its builds run steps on
the fake runtime; its image store is a directory tree)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from qbox.core.errors import NotFoundError, ValidationError
from qbox.core.timefmt import utcnow
from qbox.protocol.images import BuildRequest
from qbox.server.agent_client import AgentClient, AgentEndpoint
from qbox.server.db.tables import Template, TemplateBuildLog
from qbox.server.services import template_builds
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session, eventually
from tests.unit.server.test_sandboxes_api import spawn

SECRET = "hunter2-very-secret-password"
Body = dict[str, Any]


def create(h: Harness, body: Body | None = None, key: str | None = None) -> Body:
    r = h.client.post("/v1/templates", json={"name": "web", "imageRef": "busybox:1", **(body or {})},
                      headers=h.auth(key))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def get(h: Harness, template_id: str = "tpl_web") -> Body:
    r = h.client.get(f"/v1/templates/{template_id}", headers=h.auth())
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def until(check: Callable[[], Any], seconds: float = 5.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def settled(h: Harness, template_id: str = "tpl_web") -> Body:
    return until(lambda: (t := get(h, template_id))["status"] != "building" and t)  # type: ignore[no-any-return]


def build_log(h: Harness, template_id: str = "tpl_web", follow: bool = False) -> str:
    r = h.client.get(f"/v1/templates/{template_id}/build-log", params={"follow": str(follow).lower()},
                     headers=h.auth())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    return r.text


# --- create and build ---------------------------------------------------------


def test_create_answers_building_then_the_build_makes_it_ready(harness: Harness) -> None:
    tpl = create(harness, {
        "steps": [{"run": "echo added curl"}, {"env": {"A": "1"}}, {"workdir": "/srv"},
                  {"copy": {"path": "/srv/app.txt", "content": "hi\n"}}],
        "startCmd": "serve", "readyCmd": "", "readyTimeoutS": 45, "defaultMemoryMb": 1024,
        "env": {"B": "2"}, "tags": ["web"], "registryCredentials": {"username": "bob", "password": SECRET},
    })
    assert tpl["id"] == "tpl_web" and tpl["status"] == "building" and tpl["builtin"] is False
    assert tpl["startCmd"] == "serve" and tpl["readyCmd"] is None and tpl["readyTimeoutS"] == 45
    assert tpl["user"] == "user" and tpl["workdir"] == "/srv" and tpl["env"] == {"B": "2"}
    assert tpl["steps"][0] == {"run": "echo added curl", "user": "root"}
    assert tpl["steps"][3]["copy"] == {"path": "/srv/app.txt", "content": "hi\n", "encoding": "utf-8",
                                       "mode": 0o644, "user": "root"}
    ready = settled(harness)
    assert ready["status"] == "ready" and ready["buildError"] is None
    assert ready["imageDigest"].startswith("sha256:") and ready["sizeBytes"] == 4096
    assert [s["type"] for s in ready["services"]] == ["code-interpreter"]
    assert ready["registryRef"] == ""
    # What the agent was asked: credentials for the pull, build memory at least 2048 MB.
    body = harness.agent.builds[0]
    assert body["name"] == "web" and body["ref"] == "busybox:1" and body["push"] is None
    assert body["credentials"] == {"username": "bob", "password": SECRET}
    assert body["memoryMb"] == 2048 and body["user"] == "user" and body["env"] == {"B": "2"}
    assert len(body["steps"]) == 4
    log = build_log(harness)
    assert log.startswith("building busybox:1 on host local (build 1)\n")
    assert log.endswith("template ready: " + ready["imageDigest"] + ", 4.1 KB\n")
    # The credentials are nowhere to be read back.
    assert SECRET not in harness.client.get("/v1/templates", headers=harness.auth()).text
    assert SECRET not in log


def test_a_failed_build_says_why(harness: Harness) -> None:
    create(harness, {"steps": [{"run": "false"}]})
    failed = settled(harness)
    assert failed["status"] == "failed"
    assert failed["buildError"] == "step 1/1 (run: false) exited with code 1"
    assert build_log(harness).endswith("build failed: step 1/1 (run: false) exited with code 1\n")
    r = harness.client.post("/v1/sandboxes", json={"templateId": "tpl_web"}, headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "template_not_ready"


def test_a_long_build_log_is_returned_whole(harness: Harness) -> None:
    # More lines than one database read (5000) returns; storing them takes a while on a busy host.
    create(harness, {"steps": [{"run": "seq 0 6999 | sed 's/^/line /'"}]})
    done = until(lambda: (t := get(harness, "tpl_web"))["status"] != "building" and t, seconds=120)
    assert done["status"] == "ready"
    lines = build_log(harness).splitlines()
    first = lines.index("line 0")
    assert lines[first:first + 7_000] == [f"line {n}" for n in range(7_000)]
    r = harness.client.get("/v1/templates/tpl_web/build-log?follow=true", headers=harness.auth())
    assert r.text.splitlines() == lines


def test_an_agent_refusal_or_a_lost_connection_fails_the_build(harness: Harness) -> None:
    harness.agent.store.import_error = NotFoundError("manifest unknown")
    create(harness)
    assert settled(harness)["buildError"] == "pull failed: manifest unknown"
    harness.agent.store.import_error = None
    harness.agent.faults.cut_after_first_line.add("/builds")  # the connection breaks
    create(harness, {"name": "cut"})
    assert "lost the connection to host local" in settled(harness, "tpl_cut")["buildError"]


def test_with_a_registry_every_build_is_pushed(tmp_path: Path, database: str | None) -> None:
    for h in make_harness(tmp_path, database=database, registry="reg.example:5000/qbox"):
        create(h)
        ready = settled(h)
        assert h.agent.builds[0]["push"] == "reg.example:5000/qbox/templates/web:build-1"
        assert ready["registryRef"] == f"docker://reg.example:5000/qbox/templates/web@{ready['imageDigest']}"
        sb = spawn(h, {"templateId": "tpl_web"})
        params = h.agent.params(sb["id"])
        assert params.image_pull_ref == ready["registryRef"] and params.user == "user"


def test_a_duplicate_name_is_a_conflict(harness: Harness) -> None:
    create(harness)
    r = harness.client.post("/v1/templates", json={"name": "web", "imageRef": "other:1"}, headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = harness.client.post("/v1/templates", json={"name": "python", "imageRef": "x"}, headers=harness.auth())
    assert r.status_code == 409


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Bad Name"}, "name"),
    ({"name": "-x"}, "name"),
    ({"imageRef": ""}, "imageRef"),
    ({"imageRef": "busybox\n:1"}, "imageRef"),
    ({"runtime": "kata"}, "runtime"),
    ({"readyTimeoutS": 0}, "readyTimeoutS"),
    ({"readyTimeoutS": 3601}, "readyTimeoutS"),
    ({"defaultVcpus": 99}, "defaultVcpus"),
    ({"defaultMemoryMb": 10 ** 6}, "defaultMemoryMb"),
    ({"defaultDiskMb": 10}, "defaultDiskMb"),
    ({"steps": [{"run": "x", "env": {"A": "1"}}]}, "steps.0"),
    ({"steps": [{}]}, "steps.0"),
    ({"steps": [{"workdir": "relative"}]}, "steps.0.workdir"),
    ({"steps": [{"env": {"1A": "x"}}]}, "steps.0.env"),
    ({"steps": [{"copy": {"path": "rel", "content": ""}}]}, "steps.0.copy.path"),
    ({"steps": [{"copy": {"path": "/f", "content": "!!", "encoding": "base64"}}]}, "steps.0.copy"),
    ({"steps": [{"copy": {"path": "/f", "content": "x" * (1024 * 1024 + 1)}}]}, "steps.0.copy"),
    ({"steps": [{"copy": {"path": "/f", "content": "", "mode": 0o10000}}]}, "steps.0.copy.mode"),
    ({"steps": [{"env": {"A": "1"}, "user": "root"}]}, "steps.0"),
    ({"workdir": "srv"}, "workdir"),
    ({"env": {"QBOX_X": "1"}}, "env"),
    ({"owner": "me"}, "owner"),
])
def test_invalid_bodies_are_refused_with_the_field(harness: Harness, body: Body, field: str) -> None:
    r = harness.client.post("/v1/templates", json={"name": "web", "imageRef": "busybox:1", **body,
                                                   "registryCredentials": {"username": "u", "password": SECRET}},
                            headers=harness.auth())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]["fieldErrors"], error
    assert SECRET not in r.text
    assert harness.agent.builds == []


def test_credentials_never_leak_in_errors_logs_or_audit(harness: Harness,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad_credentials: list[Any] = [
        {"username": "u", "password": 12345678},
        {"username": "u", "password": SECRET, "token": SECRET},
        {"username": SECRET * 20, "password": SECRET},
        {"password": SECRET},
        SECRET,
        [SECRET],
    ]
    for credentials in bad_credentials:
        r = harness.client.post("/v1/templates", json={"name": "web", "imageRef": "busybox:1",
                                                       "registryCredentials": credentials},
                                headers=harness.auth())
        assert r.status_code == 400, r.text
        assert "registryCredentials" in str(r.json()["error"]["details"]["fieldErrors"])
        assert SECRET not in r.text and "12345678" not in r.text
    create(harness, {"registryCredentials": {"username": "u", "password": SECRET}})
    settled(harness)
    r = harness.client.post("/v1/templates/tpl_web/rebuild",
                            json={"registryCredentials": {"username": "u", "password": SECRET}},
                            headers=harness.auth())
    assert r.status_code == 202 and SECRET not in r.text
    settled(harness)
    assert harness.agent.builds[1]["credentials"]["password"] == SECRET
    audit = until(lambda: (t := harness.client.get("/v1/audit?limit=1000", headers=harness.auth()).text)
                  and "template.rebuild" in t and t)
    assert "template.create" in audit and SECRET not in audit
    assert SECRET not in caplog.text
    with db_session(harness.settings.data_dir) as session:
        row = session.get(Template, "tpl_web")
        assert row is not None and SECRET not in repr(vars(row))


# --- build log ----------------------------------------------------------------


def test_build_log_follow_streams_until_the_build_ends(harness: Harness) -> None:
    harness.agent.store.hold.clear()
    create(harness, {"steps": [{"run": "echo made"}]})
    until(lambda: "building busybox:1" in build_log(harness))

    def release() -> None:
        time.sleep(0.6)
        harness.agent.store.hold.set()

    threading.Thread(target=release).start()
    started = time.monotonic()
    text = build_log(harness, follow=True)
    assert time.monotonic() - started >= 0.5
    assert text.startswith("building busybox:1") and "step 1/1: run" in text
    assert text.endswith(", 4.1 KB\n") and text == build_log(harness)
    # A finished build's follow ends at once.
    assert build_log(harness, follow=True) == text


def test_a_huge_build_log_keeps_its_end(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_builds, "MAX_LOG_BYTES", 1000)
    create(harness, {"steps": [{"run": "for n in $(seq 0 999); do printf 'line %04d\\n' $n; done; exit 1"}]})
    settled(harness)
    log = build_log(harness).splitlines()
    assert len(log) < 400
    # The step's 1000 lines end with the agent's two (its exit code, the failure).
    assert log[-2].startswith("step 1/1: exit code 1") and log[-1].startswith("build failed")
    assert log[-3] == "line 0999" and log[-200] == "line 0802"
    assert log[-201].startswith("… ") and log[-201].endswith(" lines omitted …")
    omitted = int(log[-201].split()[1])
    # Besides the step's lines and the marker: "building …", the pull, the step's start and end.
    assert len(log) - 1 + omitted == 1000 + 5


def test_unknown_template_is_404(harness: Harness) -> None:
    for method, path in (("GET", "/v1/templates/tpl_nope"), ("GET", "/v1/templates/tpl_nope/build-log"),
                         ("POST", "/v1/templates/tpl_nope/rebuild"), ("DELETE", "/v1/templates/tpl_nope")):
        r = harness.client.request(method, path, headers=harness.auth())
        assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found", (method, path)


# --- rebuild and delete -------------------------------------------------------


def test_rebuild_starts_over_and_is_refused_while_building(harness: Harness) -> None:
    harness.agent.store.hold.clear()
    create(harness)
    r = harness.client.post("/v1/templates/tpl_web/rebuild", headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = harness.client.post("/v1/sandboxes", json={"templateId": "tpl_web"}, headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "template_not_ready"
    harness.agent.store.hold.set()
    first = settled(harness)
    r = harness.client.post("/v1/templates/tpl_web/rebuild", headers=harness.auth())
    assert r.status_code == 202 and r.json()["status"] == "building"
    second = settled(harness)
    assert second["status"] == "ready" and harness.agent.builds[1]["push"] is None
    assert build_log(harness).startswith("building busybox:1 on host local (build 2)\n")
    assert "(build 1)" not in build_log(harness)
    assert second["imageDigest"] == first["imageDigest"]
    r = harness.client.post("/v1/templates/tpl_python/rebuild", headers=harness.auth())
    assert r.status_code == 409


def test_delete(harness: Harness) -> None:
    create(harness)
    create(harness, {"name": "other", "imageRef": "alpine:3"})
    ready = settled(harness)
    other = settled(harness, "tpl_other")
    sb = spawn(harness, {"templateId": "tpl_web"})
    r = harness.client.delete("/v1/templates/tpl_web", headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["details"]["sandboxCount"] == 1
    harness.client.delete(f"/v1/sandboxes/{sb['id']}", headers=harness.auth())
    r = harness.client.delete("/v1/templates/tpl_web", headers=harness.auth())
    assert r.status_code == 204
    assert harness.client.get("/v1/templates/tpl_web", headers=harness.auth()).status_code == 404
    keep = until(lambda: harness.agent.gc_calls)[0]
    python = get(harness, "tpl_python")["imageDigest"]
    assert ready["imageDigest"] not in keep
    assert {python, other["imageDigest"]} <= set(keep)
    r = harness.client.delete("/v1/templates/tpl_python", headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    # The name is free again.
    create(harness)


@pytest.fixture
def short_grace(tmp_path: Path, database: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr(template_builds, "GC_FOLLOW_UP_MARGIN_SECONDS", 0.0)
    yield from make_harness(tmp_path, database=database, image_gc_grace_seconds=0.3)


def test_a_deletion_collects_again_once_the_agents_grace_has_passed(short_grace: Harness) -> None:
    # The agents spare images stored within the grace; the second gc takes what that kept.
    harness = short_grace
    create(harness)
    settled(harness)
    assert harness.client.delete("/v1/templates/tpl_web", headers=harness.auth()).status_code == 204
    first = until(lambda: harness.agent.gc_calls)[0]
    assert len(until(lambda: harness.agent.gc_calls[1:])) == 1
    assert harness.agent.gc_calls[1] == first


def test_images_are_collected_only_when_nothing_builds(harness: Harness) -> None:
    create(harness)
    settled(harness)
    harness.agent.store.hold.clear()
    create(harness, {"name": "slow", "imageRef": "alpine:3", "steps": [{"env": {"A": "1"}}]})
    assert harness.client.delete("/v1/templates/tpl_web", headers=harness.auth()).status_code == 204
    time.sleep(0.3)
    # The slow build's base image is in no template row yet: collecting now could remove it.
    assert harness.agent.gc_calls == []
    harness.agent.store.hold.set()
    slow = settled(harness, "tpl_slow")
    keep = until(lambda: harness.agent.gc_calls)[0]
    assert slow["imageDigest"] in keep and len(keep) == 3  # python's, slow's and slow's base


def test_delete_cancels_a_running_build(harness: Harness) -> None:
    harness.agent.store.hold.clear()
    create(harness)
    until(lambda: harness.agent.builds)
    r = harness.client.delete("/v1/templates/tpl_web", headers=harness.auth())
    assert r.status_code == 204
    eventually(lambda: harness.agent.store.cancelled_pulls == 1)
    with db_session(harness.settings.data_dir) as session:
        assert session.execute(select(TemplateBuildLog)).first() is None
    harness.agent.store.hold.set()


def test_list_filters_by_service(harness: Harness) -> None:
    harness.agent.store.kernels_in_images = False
    create(harness)
    settled(harness)
    names = lambda query: [t["name"] for t in harness.client.get(  # noqa: E731
        f"/v1/templates{query}", headers=harness.auth()).json()]
    assert names("") == ["python", "web"]
    assert names("?service=code-interpreter") == ["python"]


def test_templates_write_scope_is_required(harness: Harness) -> None:
    _u, reader = add_user_with_key(harness.settings.data_dir, scopes=["templates:read"])
    r = harness.client.post("/v1/templates", json={"name": "web", "imageRef": "x"}, headers=harness.auth(reader))
    assert r.status_code == 403 and r.json()["error"]["details"]["requiredScope"] == "templates:write"
    assert harness.client.get("/v1/templates", headers=harness.auth(reader)).status_code == 200
    _m, member = add_user_with_key(harness.settings.data_dir, scopes=["templates:read", "templates:write"])
    create(harness, key=member)


def get_failed_reason(data_dir: Path) -> str | None:
    with db_session(data_dir) as session:
        row = session.get(Template, "tpl_web")
        assert row is not None and row.status == "failed"
        return row.build_error


def test_builds_left_building_by_a_dead_process_fail_at_start(tmp_path: Path, database: str | None) -> None:
    for h in make_harness(tmp_path, database=database):
        h.agent.store.hold.clear()
        create(h)
        until(lambda: h.agent.builds)  # noqa: B023 - called before the loop moves on
    assert get_failed_reason(tmp_path) == "build interrupted: control plane shutting down; rebuild it"
    with db_session(tmp_path) as session:
        # As if the process had died mid-build, without its shutdown handler; on PostgreSQL,
        # which replicas may share, only a build whose lease ran out is known to be dead.
        dead = {} if database is None else {"updated_at": utcnow() - timedelta(minutes=5)}
        session.execute(update(Template).where(Template.id == "tpl_web")
                        .values(status="building", build_error=None, **dead))
        session.commit()
    for h in make_harness(tmp_path, database=database):
        tpl = get(h)
        assert tpl["status"] == "failed"
        assert tpl["buildError"] == "build interrupted: control plane restarted; rebuild it"


# --- startCmd and readyCmd in sandboxes ---------------------------------------


def logs(h: Harness, sandbox_id: str) -> list[Body]:
    return h.client.get(f"/v1/sandboxes/{sandbox_id}/logs", headers=h.auth()).json()  # type: ignore[no-any-return]


def test_start_command_output_goes_to_the_sandbox_log(harness: Harness) -> None:
    create(harness, {"startCmd": "echo started; echo oops >&2; exit 3", "steps": [{"env": {"S": "1"}}],
                     "env": {"T": "2"}})
    settled(harness)
    sb = spawn(harness, {"templateId": "tpl_web", "envs": {"U": "3"}})
    assert sb["status"] == "running"
    assert harness.agent.params(sb["id"]).envs == {"S": "1", "T": "2", "U": "3", "QBOX_SANDBOX_ID": sb["id"],
                                                   "QBOX_TEMPLATE_ID": "tpl_web"}
    entries = until(lambda: [e for e in logs(harness, sb["id"]) if e["component"] == "start_cmd"][2:] and
                    [(e["level"], e["message"]) for e in logs(harness, sb["id"]) if e["component"] == "start_cmd"])
    assert sorted(entries[:2]) == [("error", "oops"), ("info", "started")]
    assert entries[2] == ("error", "start command exited with code 3")
    started = harness.agent.commands(sb["id"])[0]
    assert started.command == ["/bin/sh", "-c", "echo started; echo oops >&2; exit 3"]


def test_start_command_output_is_capped(harness: Harness) -> None:
    create(harness, {"startCmd": "seq 1 1500"})
    settled(harness)
    sb = spawn(harness, {"templateId": "tpl_web"})
    messages = until(lambda: (m := [e["message"] for e in harness.client.get(
        f"/v1/sandboxes/{sb['id']}/logs?tail=5000", headers=harness.auth()).json()
        if e["component"] == "start_cmd"]) and m[-1].startswith("start command exited") and m)
    assert messages[0] == "1" and messages[999] == "1000"
    assert "over 1000 lines" in messages[1000] and len(messages) == 1002


def test_ready_command_gates_running(harness: Harness, tmp_path: Path) -> None:
    flag = tmp_path / "ready-flag"
    create(harness, {"readyCmd": f"test -f {flag}", "readyTimeoutS": 30})
    settled(harness)
    sb = spawn(harness, {"templateId": "tpl_web"}, query="?wait=true&waitTimeoutSec=0.7")
    assert sb["status"] == "booting"
    flag.touch()
    until(lambda: harness.client.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth())
          .json()["status"] == "running")


def test_ready_command_timeout_fails_the_sandbox(harness: Harness) -> None:
    create(harness, {"readyCmd": "echo not yet; exit 4", "readyTimeoutS": 1})
    settled(harness)
    sb = spawn(harness, {"templateId": "tpl_web"})
    assert sb["status"] == "failed"
    assert sb["endReason"] == "readyCmd did not exit 0 within 1s (last: exit code 4: not yet)"
    assert sb["id"] in harness.agent.deleted


def test_killing_a_sandbox_waiting_for_ready(harness: Harness) -> None:
    create(harness, {"readyCmd": "exit 1", "readyTimeoutS": 60})
    settled(harness)
    sb = spawn(harness, {"templateId": "tpl_web"}, query="")
    until(lambda: sb["id"] in harness.agent.sandbox_ids())
    r = harness.client.delete(f"/v1/sandboxes/{sb['id']}", headers=harness.auth())
    assert r.status_code == 204
    until(lambda: sb["id"] in harness.agent.deleted)


def test_with_several_replicas_only_builds_without_a_heartbeat_fail(harness: Harness) -> None:
    harness.agent.store.hold.clear()
    create(harness)
    create(harness, {"name": "fresh"})
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(Template).where(Template.id == "tpl_web")
                        .values(updated_at=utcnow() - timedelta(hours=1)))
        session.commit()
    builds = harness.client.app.state.services.templates.builds  # type: ignore[attr-defined]
    portal = harness.client.portal
    assert portal is not None
    assert portal.call(builds.fail_stale, utcnow() - timedelta(seconds=45)) == 1
    assert get(harness)["buildError"] == "build interrupted: control plane restarted; rebuild it"
    assert get(harness, "tpl_fresh")["status"] == "building"
    harness.agent.store.hold.set()
    assert settled(harness, "tpl_fresh")["status"] == "ready"
    # The dead build's late result does not overwrite the verdict.
    assert get(harness)["status"] == "failed"


# --- the HTTP agent client's side of builds -----------------------------------


def test_http_agent_client_streams_build_events_and_gc() -> None:
    seen: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        if request.url.path.endswith("/images/gc"):
            return httpx.Response(200, json={"removed": ["sha256:a"], "freedBytes": 10})
        if json.loads(request.content)["ref"] == "missing:1":
            return httpx.Response(400, json={"error": {"code": "validation_error", "message": "bad ref"}})
        lines = [{"type": "log", "line": "pulling"},
                 {"type": "result", "digest": "sha256:b", "sizeBytes": 1, "baseDigest": "sha256:a"}]
        return httpx.Response(200, content=b"".join(json.dumps(e).encode() + b"\n" for e in lines) + b"\n",
                              headers={"content-type": "application/x-ndjson"})

    async def scenario() -> None:
        client = AgentClient(AgentEndpoint("http://agent", "s"), transport=httpx.MockTransport(handler))
        events = [e.wire() async for e in await client.images.build(BuildRequest(name="web", ref="busybox:1"))]
        assert events == [{"type": "log", "line": "pulling"},
                          {"type": "result", "digest": "sha256:b", "sizeBytes": 1, "kernels": [],
                           "baseDigest": "sha256:a", "pushedRef": None}]
        with pytest.raises(ValidationError, match="bad ref"):
            await client.images.build(BuildRequest(name="web", ref="missing:1"))
        collected = await client.images.collect(["sha256:c"])
        assert collected.wire() == {"removed": ["sha256:a"], "freedBytes": 10}
        await client.aclose()

    asyncio.run(scenario())
    assert seen[0][0] == "/internal/v1/builds" and seen[-1] == ("/internal/v1/images/gc", {"keep": ["sha256:c"]})
