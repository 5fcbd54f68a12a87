"""Sandbox lifecycle through the HTTP API, over the real agent (fake runtime)."""

from __future__ import annotations

import re
from datetime import timedelta

from qbox.agent.runtime.base import RuntimeFailure
from qbox.core.timefmt import from_wire, utcnow
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def spawn(h: Harness, body: dict | None = None, query: str = "?wait=true&waitTimeoutSec=5",  # type: ignore[type-arg]
          key: str | None = None) -> dict:  # type: ignore[type-arg]
    r = h.client.post(f"/v1/sandboxes{query}", json={"templateId": "tpl_python", **(body or {})},
                      headers=h.auth(key))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_spawn_with_wait_returns_running_sandbox(harness: Harness) -> None:
    sb = spawn(harness, {"labels": {"name": "demo"}, "envs": {"FOO": "bar"}, "vcpus": 2,
                         "memoryMb": 1024})
    assert sb["id"].startswith("sb_") and ":" not in sb["id"]
    assert sb["status"] == "running"
    assert sb["templateId"] == "tpl_python"
    assert sb["vm"] == {"vcpus": 2, "memoryMb": 1024}
    assert sb["labels"] == {"name": "demo"}
    assert [s["type"] for s in sb["services"]] == ["code-interpreter"]  # the template's
    assert sb["timeoutSeconds"] == 300
    assert sb["hostId"] == "local"
    for field in ("createdAt", "bootedAt", "expiresAt"):
        assert WIRE_TIME.match(sb[field]), field
    assert sb["endedAt"] is None
    # The agent got the merged environment and the limits.
    params = harness.agent.params(sb["id"])
    assert params.envs == {"FOO": "bar", "QBOX_SANDBOX_ID": sb["id"], "QBOX_TEMPLATE_ID": "tpl_python"}
    assert params.vcpus == 2 and params.memory_mb == 1024
    assert params.image_digest.startswith("sha256:")


def test_spawn_without_wait_answers_at_once_booting(harness: Harness) -> None:
    harness.agent.runtime.run_delay = 0.5
    sb = spawn(harness, query="")
    assert sb["status"] == "booting"
    assert sb["bootedAt"] is None


def test_wait_timeout_returns_the_sandbox_as_it_is(harness: Harness) -> None:
    harness.agent.runtime.run_delay = 2
    sb = spawn(harness, query="?wait=true&waitTimeoutSec=0.2")
    assert sb["status"] == "booting"


def test_boot_failure_is_failed_with_reason(harness: Harness) -> None:
    harness.agent.runtime.run_error = RuntimeFailure("crun said no")
    sb = spawn(harness)
    assert sb["status"] == "failed"
    assert "crun said no" in sb["endReason"]
    logs = harness.client.get(f"/v1/sandboxes/{sb['id']}/logs", headers=harness.auth()).json()
    assert any("crun said no" in e["message"] and e["level"] == "error" for e in logs)


def test_spawn_errors(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    r = c.post("/v1/sandboxes", json={"templateId": "tpl_nope"}, headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    assert r.json()["error"]["details"]["templateId"] == "tpl_nope"
    r = c.post("/v1/sandboxes", json={}, headers=auth)
    assert r.status_code == 400 and "templateId" in r.json()["error"]["details"]["fieldErrors"]
    r = c.post("/v1/sandboxes", json={"templateId": "tpl_python", "envs": {"QBOX_X": "1"}},
               headers=auth)
    assert r.status_code == 400 and "envs" in r.json()["error"]["details"]["fieldErrors"]
    r = c.post("/v1/sandboxes", json={"templateId": "tpl_python", "vcpus": 64}, headers=auth)
    assert r.status_code == 400 and "vcpus" in r.json()["error"]["details"]["fieldErrors"]
    r = c.post("/v1/sandboxes", json={"templateId": "tpl_python", "timeoutSeconds": -1},
               headers=auth)
    assert r.status_code == 400
    r = c.post("/v1/sandboxes?wait=maybe", json={"templateId": "tpl_python"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    # None of those left a sandbox behind.
    assert c.get("/v1/sandboxes", headers=auth).json() == []


def test_timeout_zero_disables_auto_kill(harness: Harness) -> None:
    sb = spawn(harness, {"timeoutSeconds": 0})
    assert sb["timeoutSeconds"] == 0 and sb["expiresAt"] is None


def test_list_is_a_bare_array_with_filters(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    a = spawn(harness)
    b = spawn(harness)
    c.delete(f"/v1/sandboxes/{b['id']}", headers=auth)
    everything = c.get("/v1/sandboxes", headers=auth).json()
    assert isinstance(everything, list)
    assert {s["id"] for s in everything} == {a["id"], b["id"]}
    running = c.get("/v1/sandboxes", params={"status": "running"}, headers=auth).json()
    assert [s["id"] for s in running] == [a["id"]]
    killed = c.get("/v1/sandboxes", params={"status": "killed"}, headers=auth).json()
    assert [s["id"] for s in killed] == [b["id"]]
    assert len(c.get("/v1/sandboxes", params={"limit": 1}, headers=auth).json()) == 1
    assert c.get("/v1/sandboxes", params={"templateId": "tpl_other"}, headers=auth).json() == []
    r = c.get("/v1/sandboxes", params={"status": "exploded"}, headers=auth)
    assert r.status_code == 400


def test_get_unknown_is_sandbox_not_found(harness: Harness) -> None:
    r = harness.client.get("/v1/sandboxes/sb_doesnotexist", headers=harness.auth())
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "sandbox_not_found"


def test_delete_kills_and_second_delete_is_409(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    assert c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth).status_code == 204
    assert sb["id"] in harness.agent.deleted
    got = c.get(f"/v1/sandboxes/{sb['id']}", headers=auth).json()
    assert got["status"] == "killed" and got["endedAt"] and "DELETE" in got["endReason"]
    again = c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "sandbox_not_active"
    assert again.json()["error"]["details"]["currentState"] == "killed"


def test_set_timeout_resets_deadline_and_returns_sandbox(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness, {"timeoutSeconds": 30})
    r = c.post(f"/v1/sandboxes/{sb['id']}/timeout", json={"timeoutSeconds": 600}, headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == sb["id"] and body["timeoutSeconds"] == 600
    remaining = from_wire(body["expiresAt"]) - utcnow()
    assert timedelta(seconds=590) < remaining <= timedelta(seconds=600)
    r = c.post(f"/v1/sandboxes/{sb['id']}/timeout", json={"timeoutSeconds": 0}, headers=auth)
    assert r.json()["expiresAt"] is None
    r = c.post(f"/v1/sandboxes/{sb['id']}/timeout", json={}, headers=auth)
    assert r.status_code == 400
    c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    r = c.post(f"/v1/sandboxes/{sb['id']}/timeout", json={"timeoutSeconds": 5}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active"


def test_logs_are_a_bare_array_oldest_first_with_tail(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    logs = c.get(f"/v1/sandboxes/{sb['id']}/logs", headers=auth).json()
    assert [set(e) for e in logs] == [{"time", "level", "component", "message"}] * len(logs)
    assert len(logs) == 3
    assert "spawn requested" in logs[0]["message"]
    assert logs[1]["message"] == "sandbox running"
    assert "killed by DELETE" in logs[2]["message"]
    assert [e["time"] for e in logs] == sorted(e["time"] for e in logs)
    assert all(WIRE_TIME.match(e["time"]) for e in logs)
    tail = c.get(f"/v1/sandboxes/{sb['id']}/logs?tail=1", headers=auth).json()
    assert tail == logs[-1:]


def test_members_cannot_see_or_touch_other_users_sandboxes(harness: Harness) -> None:
    data_dir = harness.settings.data_dir
    _alice, alice = add_user_with_key(data_dir)
    _bob, bob = add_user_with_key(data_dir)
    sb = spawn(harness, key=alice)
    c = harness.client
    for method, path, body in [
        ("GET", "", None), ("DELETE", "", None), ("POST", "/timeout", {"timeoutSeconds": 1}),
        ("GET", "/logs", None), ("POST", "/exec", {"cmd": "true"}),
        ("POST", "/commands", {"cmd": "true"}), ("GET", "/commands", None),
    ]:
        r = c.request(method, f"/v1/sandboxes/{sb['id']}{path}", json=body, headers=harness.auth(bob))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "sandbox_not_found"
    assert c.get("/v1/sandboxes", headers=harness.auth(bob)).json() == []
    # The owner and the admin still see it.
    assert c.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth(alice)).status_code == 200
    assert c.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).status_code == 200


def test_network_and_disk_settings_reach_the_agent(harness: Harness) -> None:
    default = spawn(harness)
    assert default["allowInternetAccess"] is True and default["diskSizeMb"] == 2048
    assert default["runtime"] == "crun"
    params = harness.agent.params(default["id"])
    assert (params.allow_internet_access, params.disk_size_mb, params.runtime) == (True, 2048, "crun")
    offline = spawn(harness, {"allowInternetAccess": False, "diskSizeMb": 512})
    assert offline["allowInternetAccess"] is False and offline["diskSizeMb"] == 512
    params = harness.agent.params(offline["id"])
    assert (params.allow_internet_access, params.disk_size_mb) == (False, 512)


def test_limits_beyond_the_caps_and_runtime_are_refused(harness: Harness) -> None:
    for body, field in [({"diskSizeMb": 10**7}, "diskSizeMb"), ({"memoryMb": 10**6}, "memoryMb"),
                        ({"runtime": "runsc"}, "runtime"), ({"hostId": "elsewhere"}, "hostId"),
                        ({"allowInternetAccess": "yes please"}, "allowInternetAccess")]:
        r = harness.client.post("/v1/sandboxes", json={"templateId": "tpl_python", **body}, headers=harness.auth())
        assert r.status_code == 400, body
        assert field in r.json()["error"]["details"]["fieldErrors"], body
