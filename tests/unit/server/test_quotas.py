"""Per-user quotas through the app (issue 13, findings 8 and 4): sandboxes, vCPUs, memory, disk,
commands and shells; defaults, overrides and who may see and set them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from qbox.server.db.tables import Sandbox
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn
from tests.unit.server.test_shell_api import eventually, refused, url

SPAWN = "/v1/sandboxes?wait=true&waitTimeoutSec=5"


@pytest.fixture
def member(harness: Harness) -> tuple[str, str]:
    return add_user_with_key(harness.settings.data_dir)


def try_spawn(h: Harness, key: str, **body: Any) -> Any:
    return h.client.post(SPAWN, json={"templateId": "tpl_python", **body}, headers=h.auth(key))


def stored_sandboxes(h: Harness, user_id: str) -> int:
    with db_session(h.settings.data_dir) as session:
        return session.scalar(select(func.count()).select_from(Sandbox).where(Sandbox.owner_id == user_id)) or 0


def quota_error(r: Any) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded"
    return error["details"]  # type: ignore[no-any-return]


def set_defaults(h: Harness, **limits: int | None) -> dict[str, Any]:
    r = h.client.put("/v1/quota-defaults", json=limits, headers=h.auth())
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# --- running sandboxes and what they reserve -----------------------------------


def test_the_sandbox_quota_refuses_with_details_and_stores_nothing(harness: Harness,
                                                                   member: tuple[str, str]) -> None:
    user_id, key = member
    set_defaults(harness, sandboxes=2)
    first = spawn(harness, key=key)
    spawn(harness, key=key)
    details = quota_error(try_spawn(harness, key))
    assert details == {"quota": "sandboxes", "limit": 2, "used": 2, "requested": 1}
    assert stored_sandboxes(harness, user_id) == 2 and len(harness.agent.sandbox_ids()) == 2
    # An ended sandbox no longer counts.
    assert harness.client.delete(f"/v1/sandboxes/{first['id']}", headers=harness.auth(key)).status_code == 204
    assert try_spawn(harness, key).status_code == 201


@pytest.mark.parametrize(("quota", "limit", "body", "used", "requested"), [
    ("vcpus", 3, {"vcpus": 2}, 2, 2),
    ("memoryMb", 1500, {"memoryMb": 1024}, 1024, 1024),
    ("diskMb", 5000, {"diskSizeMb": 4096}, 4096, 4096),
])
def test_each_resource_quota_counts_the_live_sandboxes(harness: Harness, member: tuple[str, str], quota: str,
                                                       limit: int, body: dict[str, int], used: int,
                                                       requested: int) -> None:
    user_id, key = member
    set_defaults(harness, **{quota: limit})
    assert try_spawn(harness, key, **body).status_code == 201
    details = quota_error(try_spawn(harness, key, **body))
    assert details == {"quota": quota, "limit": limit, "used": used, "requested": requested}
    assert stored_sandboxes(harness, user_id) == 1


def test_thirty_concurrent_spawns_by_one_member_stop_at_the_quota(harness: Harness,
                                                                   member: tuple[str, str]) -> None:
    # Finding 8: all 30 succeeded. The default quota (QBOX_QUOTA_SANDBOXES) is 10.
    user_id, key = member
    harness.agent.runtime.run_delay = 0.05  # boots overlap the next spawns
    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(lambda _: try_spawn(harness, key).status_code, range(30)))
    assert sorted(codes) == [201] * 10 + [429] * 20
    assert stored_sandboxes(harness, user_id) == 10


def test_admins_are_exempt(harness: Harness) -> None:
    set_defaults(harness, sandboxes=1)
    spawn(harness)
    spawn(harness)
    me = harness.client.get("/v1/quota", headers=harness.auth()).json()
    assert me["exempt"] is True and me["limits"]["sandboxes"] is None and me["usage"]["sandboxes"] == 2


# --- defaults and overrides ------------------------------------------------------


def test_defaults_start_from_the_settings_and_null_returns_to_them(tmp_path: Path, database: str | None) -> None:
    for h in make_harness(tmp_path, database=database, quota_vcpus=6):
        assert h.client.get("/v1/quota-defaults", headers=h.auth()).json()["limits"]["vcpus"] == 6
        changed = set_defaults(h, vcpus=12, shells=1)
        assert changed["limits"]["vcpus"] == 12 and changed["stored"]["vcpus"] == 12
        assert changed["limits"]["sandboxes"] == h.settings.quota_sandboxes
        back = set_defaults(h, vcpus=None)
        assert back["limits"]["vcpus"] == 6 and back["stored"]["vcpus"] is None
        assert back["limits"]["shells"] == 1  # fields not sent keep their value


def test_an_override_beats_the_default_until_reset(harness: Harness, member: tuple[str, str]) -> None:
    user_id, key = member
    set_defaults(harness, sandboxes=1)
    r = harness.client.put(f"/v1/users/{user_id}/quota", json={"sandboxes": 3}, headers=harness.auth())
    assert r.status_code == 200, r.text
    assert r.json()["limits"]["sandboxes"] == 3 and r.json()["overrides"]["sandboxes"] == 3
    for _ in range(3):
        spawn(harness, key=key)
    assert quota_error(try_spawn(harness, key))["limit"] == 3
    # The default changing does not touch an override.
    set_defaults(harness, sandboxes=5)
    assert quota_error(try_spawn(harness, key))["limit"] == 3
    reset = harness.client.put(f"/v1/users/{user_id}/quota", json={"sandboxes": None}, headers=harness.auth())
    assert reset.json()["overrides"]["sandboxes"] is None and reset.json()["limits"]["sandboxes"] == 5
    assert try_spawn(harness, key).status_code == 201


def test_a_member_reads_only_their_own_quota_and_sets_none(harness: Harness, member: tuple[str, str]) -> None:
    user_id, key = member
    other_id, _other = add_user_with_key(harness.settings.data_dir)
    spawn(harness, {"vcpus": 2, "memoryMb": 256, "diskSizeMb": 1024}, key=key)
    mine = harness.client.get("/v1/quota", headers=harness.auth(key)).json()
    assert mine["userId"] == user_id and mine["exempt"] is False
    assert mine["usage"] == {"sandboxes": 1, "vcpus": 2, "memoryMb": 256, "diskMb": 1024,
                             "commands": 0, "shells": 0}
    assert harness.client.get(f"/v1/users/{user_id}/quota", headers=harness.auth(key)).json() == mine
    assert harness.client.get(f"/v1/users/{other_id}/quota", headers=harness.auth(key)).status_code == 404
    for path in (f"/v1/users/{user_id}/quota", "/v1/quota-defaults"):
        assert harness.client.put(path, json={"sandboxes": 99}, headers=harness.auth(key)).status_code == 403
    assert harness.client.get("/v1/quota-defaults", headers=harness.auth(key)).status_code == 403


@pytest.mark.parametrize("body", [{"vcpus": -1}, {"vcpus": True}, {"vcpus": "4"}, {"vcpus": 1.5},
                                  {"cpus": 4}, {"shells": 2**31}])
def test_bad_quota_bodies_are_400(harness: Harness, member: tuple[str, str], body: dict[str, Any]) -> None:
    user_id, _key = member
    for path in (f"/v1/users/{user_id}/quota", "/v1/quota-defaults"):
        r = harness.client.put(path, json=body, headers=harness.auth())
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", (path, r.text)


def test_quota_of_an_unknown_user_is_404(harness: Harness) -> None:
    for method in ("GET", "PUT"):
        r = harness.client.request(method, "/v1/users/usr_nobody/quota", json={}, headers=harness.auth())
        assert r.status_code == 404, r.text


def test_changes_are_audited(harness: Harness, member: tuple[str, str]) -> None:
    user_id, _key = member
    harness.client.put(f"/v1/users/{user_id}/quota", json={"vcpus": 8, "shells": None}, headers=harness.auth())
    set_defaults(harness, commands=4)
    by_action = {e["action"]: e for e in entries(harness)}
    assert by_action["user.quota"]["targetId"] == user_id
    assert by_action["user.quota"]["detail"] == "shells=default vcpus=8"
    assert by_action["quota.defaults"]["detail"] == "commands=4"


# --- commands and shells ---------------------------------------------------------


@pytest.fixture
def sandbox_of(harness: Harness, member: tuple[str, str]) -> str:
    return str(spawn(harness, key=member[1])["id"])


def test_running_background_commands_hold_the_command_quota(harness: Harness, member: tuple[str, str],
                                                             sandbox_of: str) -> None:
    _user_id, key = member
    set_defaults(harness, commands=2)
    commands = f"/v1/sandboxes/{sandbox_of}/commands"
    pids = [harness.client.post(commands, json={"cmd": "cat", "stdin": True}, headers=harness.auth(key)).json()["pid"]
            for _ in range(2)]
    details = quota_error(harness.client.post(commands, json={"cmd": "true"}, headers=harness.auth(key)))
    assert details == {"quota": "commands", "limit": 2, "used": 2, "requested": 1}
    assert quota_error(harness.client.post(f"/v1/sandboxes/{sandbox_of}/exec", json={"cmd": "true"},
                                           headers=harness.auth(key)))["quota"] == "commands"
    # One ends (its stdin closed): its slot is free again.
    r = harness.client.post(f"{commands}/{pids[0]}/stdin", json={"data": "", "close": True}, headers=harness.auth(key))
    assert r.status_code == 204
    r = harness.client.post(f"/v1/sandboxes/{sandbox_of}/exec", json={"cmd": "echo", "args": ["ok"]},
                            headers=harness.auth(key))
    assert r.status_code == 200 and r.json()["stdout"] == "ok\n", r.text
    # Quick commands that ended never pile up against the quota.
    for _ in range(5):
        r = harness.client.post(commands, json={"cmd": "true"}, headers=harness.auth(key))
        assert r.status_code == 201
        status = f"{commands}/{r.json()['pid']}"
        eventually(lambda: not harness.client.get(status, headers=harness.auth(key)).json()["alive"])  # noqa: B023


def test_in_flight_execs_hold_the_command_quota(harness: Harness, member: tuple[str, str],
                                                sandbox_of: str) -> None:
    _user_id, key = member
    set_defaults(harness, commands=1)
    exec_url = f"/v1/sandboxes/{sandbox_of}/exec"
    go = harness.settings.data_dir / "go"

    def long_exec() -> int:
        # Runs until the test has seen the refusal and creates the file.
        body = {"cmd": "sh", "args": ["-c", f"while [ ! -e {go} ]; do sleep 0.02; done"]}
        return int(harness.client.post(exec_url, json=body, headers=harness.auth(key)).status_code)

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(long_exec)
        eventually(lambda: harness.client.get("/v1/quota", headers=harness.auth(key)).json()["usage"]["commands"] == 1)
        try:
            details = quota_error(harness.client.post(exec_url, json={"cmd": "true"}, headers=harness.auth(key)))
            assert details == {"quota": "commands", "limit": 1, "used": 1, "requested": 1}
        finally:
            go.touch()
        assert running.result() == 200
    # Given back when the call ended, streamed or not.
    assert harness.client.get("/v1/quota", headers=harness.auth(key)).json()["usage"]["commands"] == 0
    streamed = harness.client.post(exec_url, json={"cmd": "true"},
                                   headers={**harness.auth(key), "Accept": "application/x-ndjson"})
    assert streamed.status_code == 200 and b'"exit"' in streamed.content
    assert harness.client.post(exec_url, json={"cmd": "true"}, headers=harness.auth(key)).status_code == 200


@pytest.fixture
def three_commands(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database, quota_commands=3)


def test_finding_4_one_member_cannot_run_more_long_execs_than_the_quota(three_commands: Harness) -> None:
    # Before: every one of a member's concurrent long execs ran (100 of them stalled everyone).
    h = three_commands
    _user_id, key = add_user_with_key(h.settings.data_dir)
    sandbox = spawn(h, key=key)["id"]
    marks, go = h.settings.data_dir / "marks", h.settings.data_dir / "go"
    marks.mkdir()
    # Each exec leaves a mark once it runs, then waits for the test.
    body = {"cmd": "sh", "args": ["-c", f"touch {marks}/$$; while [ ! -e {go} ]; do sleep 0.02; done"]}
    exec_url = f"/v1/sandboxes/{sandbox}/exec"
    with ThreadPoolExecutor(max_workers=3) as pool:
        running = [pool.submit(h.client.post, exec_url, json=body, headers=h.auth(key)) for _ in range(3)]
        try:
            eventually(lambda: len(list(marks.iterdir())) == 3)
            details = quota_error(h.client.post(exec_url, json={"cmd": "true"}, headers=h.auth(key)))
            assert details == {"quota": "commands", "limit": 3, "used": 3, "requested": 1}
        finally:
            go.touch()
        assert [f.result().status_code for f in running] == [200, 200, 200]


def test_other_users_do_not_share_a_members_command_quota(harness: Harness, member: tuple[str, str],
                                                          sandbox_of: str) -> None:
    _user_id, key = member
    set_defaults(harness, commands=1)
    commands = f"/v1/sandboxes/{sandbox_of}/commands"
    r = harness.client.post(commands, json={"cmd": "cat", "stdin": True}, headers=harness.auth(key))
    assert r.status_code == 201
    _other_id, other = add_user_with_key(harness.settings.data_dir)
    theirs = spawn(harness, key=other)["id"]
    r = harness.client.post(f"/v1/sandboxes/{theirs}/exec", json={"cmd": "true"}, headers=harness.auth(other))
    assert r.status_code == 200


def test_the_shell_quota_refuses_before_the_upgrade(harness: Harness, member: tuple[str, str],
                                                    sandbox_of: str) -> None:
    _user_id, key = member
    set_defaults(harness, shells=1)
    with harness.client.websocket_connect(url(sandbox_of), headers=harness.auth(key)):
        eventually(lambda: harness.client.get("/v1/quota", headers=harness.auth(key)).json()["usage"]["shells"] == 1)
        assert refused(harness, url(sandbox_of), harness.auth(key)) == (429, "quota_exceeded")
    eventually(lambda: harness.client.get("/v1/quota", headers=harness.auth(key)).json()["usage"]["shells"] == 0)
    with harness.client.websocket_connect(url(sandbox_of), headers=harness.auth(key)):
        pass
    # A refused open gives its slot back too.
    assert refused(harness, url("sb_missing"), harness.auth(key))[0] == 404
    assert harness.client.get("/v1/quota", headers=harness.auth(key)).json()["usage"]["shells"] == 0


@pytest.fixture
def harness(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database)
