"""/v1/hosts, /v1/host-tokens and /v1/agent: the hosts operators see, joining, heartbeats, loss.

The embedded agent is ``local``; a second real agent (its own data dir, on
the fake runtime) joins as a host of its own: the control plane reaches it
through the harness's in-process bridge, whatever address it advertised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from qbox.core.timefmt import utcnow
from qbox.core.errors import HostNoCapacityError
from qbox.protocol.host import HostReport, JoinRequest
from qbox.server.db.tables import Host, JoinToken
from qbox.server.services.host_join import new_host_id
from qbox.server.services.hostsync import sync_hosts
from qbox.server.services.placement import lock_host
from tests.unit.server.agent_host import RunningAgent
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session, eventually

SPAWN = "/v1/sandboxes?wait=true&waitTimeoutSec=5"


def report(address: str = "http://10.9.0.2:7001", **extra: Any) -> dict[str, Any]:
    return {"version": "test", "runtime": "crun", "runtimes": ["crun"], "sandboxes": 0,
            "hostname": "node-2", "address": address,
            "capacity": {"vcpus": 8, "memoryMb": 16384, "diskTotalMb": 100000, "diskFreeMb": 90000},
            "usage": {"cpuPercent": 12.5, "memoryUsedMb": 2048, "diskUsedMb": 10000,
                      "diskTotalMb": 100000},
            "images": [], "maxSandboxes": 100, "labels": {"zone": "b"}, **extra}


def services(h: Harness) -> Any:
    return h.client.app.state.services  # type: ignore[attr-defined]


def run(h: Harness, coroutine: Any) -> Any:
    """Run a coroutine on the app's loop (the monitor's tick, as its loop would)."""
    return h.client.portal.call(lambda: coroutine)  # type: ignore[union-attr]


def new_token(h: Harness, **body: Any) -> dict[str, Any]:
    r = h.client.post("/v1/host-tokens", json=body, headers=h.auth())
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def join(h: Harness, token: str, **body: Any) -> Any:
    return h.client.post("/v1/agent/join", json={"token": token, "report": report(**body)})


@pytest.fixture
def second(harness: Harness, tmp_path: Path) -> Iterator[RunningAgent]:
    """A second agent; every joined host's client reaches it. Its machine's base image is
    where the harness's built-in one says (a directory it may build from)."""
    with RunningAgent(tmp_path / "agent-2", import_dirs=("/nonexistent",)) as agent:
        services(harness).ctx.agents.factory = lambda _address, _secret: agent.client()
        yield agent


def joined(h: Harness, second: RunningAgent | None = None) -> dict[str, Any]:
    """Join a host; with ``second``, one that holds the built-in template's image."""
    images = []
    if second is not None:
        imported = run(h, second.client().images.import_image("oci:/nonexistent:latest", "python"))
        images = [imported.digest]
    reply = join(h, new_token(h, labels={"gpu": "true"})["token"], images=images)
    assert reply.status_code == 201, reply.text
    return reply.json()  # type: ignore[no-any-return]


def test_the_embedded_host_is_listed_with_its_figures(harness: Harness) -> None:
    hosts = harness.client.get("/v1/hosts", headers=harness.auth()).json()
    assert isinstance(hosts, list) and [h["id"] for h in hosts] == ["local"]
    local = hosts[0]
    assert local["status"] == "ready" and local["kind"] == "embedded"
    assert local["totalVcpus"] > 0 and local["totalMemoryMb"] > 0 and local["sandboxCount"] == 0
    assert "crun" in local["runtimes"] and local["lastHeartbeatAt"]
    one = harness.client.get("/v1/hosts/local", headers=harness.auth()).json()
    assert one == local


def test_utilization_moves_when_sandboxes_start_and_end(harness: Harness) -> None:
    sb = harness.client.post(SPAWN, json={"templateId": "tpl_python", "vcpus": 2, "memoryMb": 256},
                             headers=harness.auth()).json()
    local = harness.client.get("/v1/hosts/local", headers=harness.auth()).json()
    assert (local["sandboxCount"], local["usedVcpus"], local["usedMemoryMb"]) == (1, 2, 256)
    harness.client.delete(f"/v1/sandboxes/{sb['id']}", headers=harness.auth())
    local = harness.client.get("/v1/hosts/local", headers=harness.auth()).json()
    assert (local["sandboxCount"], local["usedVcpus"], local["usedMemoryMb"]) == (0, 0, 0)


def test_members_can_neither_read_nor_change_hosts(harness: Harness) -> None:
    _, key = add_user_with_key(harness.settings.data_dir)
    token = new_token(harness)
    attempts = [("GET", "/v1/hosts"), ("GET", "/v1/hosts/local"), ("POST", "/v1/hosts/local/drain"),
                ("POST", "/v1/hosts/local/uncordon"), ("DELETE", "/v1/hosts/local"),
                ("POST", "/v1/host-tokens"), ("GET", "/v1/host-tokens"),
                ("DELETE", f"/v1/host-tokens/{token['id']}")]
    for method, path in attempts:
        r = harness.client.request(method, path, headers=harness.auth(key))
        assert r.status_code == 403, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "forbidden"
    status = harness.client.get("/v1/hosts/local", headers=harness.auth()).json()["status"]
    tokens = harness.client.get("/v1/host-tokens", headers=harness.auth()).json()
    assert status == "ready" and [t["status"] for t in tokens] == ["active"]


def test_an_unknown_host_is_404(harness: Harness) -> None:
    for method, path in [("GET", "/v1/hosts/host_nope1234"), ("POST", "/v1/hosts/host_nope1234/drain"),
                         ("DELETE", "/v1/hosts/host_nope1234"), ("DELETE", "/v1/host-tokens/jt_nope12345")]:
        r = harness.client.request(method, path, headers=harness.auth())
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path)


def test_a_drained_host_takes_no_new_sandbox_and_keeps_its_running_ones(harness: Harness) -> None:
    running = harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth()).json()
    drained = harness.client.post("/v1/hosts/local/drain", headers=harness.auth())
    assert drained.status_code == 200 and drained.json()["status"] == "draining"
    refused = harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth())
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "host_no_capacity" and error["details"]["reasons"] == {"draining": 1}
    assert error["details"]["transient"] is True and refused.headers["Retry-After"]
    still = harness.client.get(f"/v1/sandboxes/{running['id']}", headers=harness.auth()).json()
    assert still["status"] == "running" and running["id"] in harness.agent.running_ids()
    back = harness.client.post("/v1/hosts/local/uncordon", headers=harness.auth())
    assert back.json()["status"] == "ready"
    assert harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth()).status_code == 201


def test_the_embedded_host_cannot_be_removed(harness: Harness) -> None:
    r = harness.client.delete("/v1/hosts/local", headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_a_join_token_is_shown_once_and_used_once(harness: Harness, second: RunningAgent) -> None:
    token = new_token(harness, ttlSeconds=600, labels={"gpu": "true"})
    assert token["token"].startswith("qbj_") and token["status"] == "active"
    assert token["token"] in token["joinCommand"] and "--join" in token["joinCommand"]
    listed = harness.client.get("/v1/host-tokens", headers=harness.auth()).json()
    assert "token" not in listed[0] and token["token"] not in str(listed)
    first = join(harness, token["token"])
    assert first.status_code == 201, first.text
    reply = first.json()
    assert reply["credential"].startswith("qbh_") and reply["agentSecret"]
    assert reply["heartbeatSeconds"] == harness.settings.host_heartbeat_seconds
    again = join(harness, token["token"], address="http://10.9.0.3:7001")
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_join_token"
    host = harness.client.get(f"/v1/hosts/{reply['hostId']}", headers=harness.auth()).json()
    assert host["kind"] == "joined" and host["status"] == "ready" and host["hostname"] == "node-2"
    assert host["labels"] == {"gpu": "true", "zone": "b"} and host["cpuPercent"] == 12.5
    assert host["templates"] == []
    assert (host["totalVcpus"], host["diskUsedMb"], host["maxSandboxes"]) == (8, 10000, 100)
    used = harness.client.get("/v1/host-tokens", headers=harness.auth()).json()[0]
    assert (used["status"], used["hostId"]) == ("used", reply["hostId"])
    # Only hashes are stored.
    with db_session(harness.settings.data_dir) as session:
        stored = session.scalars(select(Host).where(Host.id == reply["hostId"])).one()
        assert reply["credential"] not in str(vars(stored))
        assert token["token"] not in str(vars(session.scalars(select(JoinToken)).one()))


def test_expired_revoked_and_unknown_tokens_are_refused(harness: Harness) -> None:
    expired = new_token(harness)
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(JoinToken).where(JoinToken.id == expired["id"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    revoked = new_token(harness)
    assert harness.client.delete(f"/v1/host-tokens/{revoked['id']}", headers=harness.auth()).status_code == 204
    for secret in (expired["token"], revoked["token"], "qbj_forged"):
        r = join(harness, secret)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_join_token"
    statuses = {t["id"]: t["status"] for t in harness.client.get("/v1/host-tokens", headers=harness.auth()).json()}
    assert statuses == {expired["id"]: "expired", revoked["id"]: "revoked"}
    assert [h["id"] for h in harness.client.get("/v1/hosts", headers=harness.auth()).json()] == ["local"]


def test_a_join_with_a_bad_address_is_refused_and_keeps_its_token(harness: Harness) -> None:
    token = new_token(harness)
    for address in ("ftp://10.0.0.1:21", "http://10.0.0.1", "http://10.0.0.1:80/x?y", "/run/agent.sock"):
        r = join(harness, token["token"], address=address)
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", address
    assert harness.client.get("/v1/host-tokens", headers=harness.auth()).json()[0]["status"] == "active"


def test_heartbeats_need_the_hosts_credential(harness: Harness, second: RunningAgent) -> None:
    reply = joined(harness)
    beat = harness.client.post("/v1/agent/heartbeat", json=report(sandboxes=0),
                               headers={"Authorization": f"Bearer {reply['credential']}"})
    assert beat.status_code == 200 and beat.json()["hostId"] == reply["hostId"]
    assert beat.json()["status"] == "ready" and beat.json()["deadlines"] == {}
    for headers in ({}, {"Authorization": "Bearer qbh_forged"}, {"Authorization": "Basic x"}):
        r = harness.client.post("/v1/agent/heartbeat", json=report(), headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_host_credential"


def test_spawns_spread_to_a_joined_host_and_reach_it(harness: Harness, second: RunningAgent) -> None:
    reply = joined(harness, second)
    harness.client.post("/v1/hosts/local/drain", headers=harness.auth())
    sb = harness.client.post(SPAWN, json={"templateId": "tpl_python", "timeoutSeconds": 120},
                             headers=harness.auth()).json()
    assert sb["status"] == "running" and sb["hostId"] == reply["hostId"]
    host = harness.client.get(f"/v1/hosts/{reply['hostId']}", headers=harness.auth()).json()
    assert host["templates"] == ["tpl_python"]
    assert second.running_ids() == [sb["id"]] and harness.agent.running_ids() == []
    done = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"}, headers=harness.auth())
    assert done.status_code == 200
    # Its deadline rides on the heartbeat's answer, for the agent to enforce itself.
    beat = harness.client.post("/v1/agent/heartbeat", json=report(sandboxes=1),
                               headers={"Authorization": f"Bearer {reply['credential']}"}).json()
    assert list(beat["deadlines"]) == [sb["id"]] and beat["deadlines"][sb["id"]] == sb["expiresAt"]


def test_removing_a_host_revokes_it_and_ends_its_sandboxes(harness: Harness, second: RunningAgent) -> None:
    reply = joined(harness, second)
    harness.client.post("/v1/hosts/local/drain", headers=harness.auth())
    sb = harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth()).json()
    assert harness.client.delete(f"/v1/hosts/{reply['hostId']}", headers=harness.auth()).status_code == 204
    ended = harness.client.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).json()
    assert ended["status"] == "failed" and ended["endReason"].startswith("host removed")
    assert second.running_ids() == []
    assert harness.client.get(f"/v1/hosts/{reply['hostId']}", headers=harness.auth()).status_code == 404
    beat = harness.client.post("/v1/agent/heartbeat", json=report(),
                               headers={"Authorization": f"Bearer {reply['credential']}"})
    assert beat.status_code == 401 and beat.json()["error"]["code"] == "invalid_host_credential"


def _age(h: Harness, host_id: str, seconds: float) -> None:
    with db_session(h.settings.data_dir) as session:
        session.execute(update(Host).where(Host.id == host_id)
                        .values(last_seen_at=utcnow() - timedelta(seconds=seconds)))
        session.commit()


def test_a_silent_host_goes_unhealthy_then_down_and_its_sandboxes_are_lost(
        harness: Harness, second: RunningAgent) -> None:
    monitor = services(harness).host_monitor
    reply = joined(harness, second)
    host_id = reply["hostId"]
    harness.client.post("/v1/hosts/local/drain", headers=harness.auth())
    sb = harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth()).json()
    run(harness, monitor.tick())  # this replica starts watching now
    # Silent for longer than the grace, but this replica only just began watching: an outage
    # of the control plane or its database is never taken for the host's.
    _age(harness, host_id, 3600)
    run(harness, monitor.tick())
    assert harness.client.get(f"/v1/hosts/{host_id}", headers=harness.auth()).json()["status"] == "ready"
    beat, lost = harness.settings.host_heartbeat_seconds, harness.settings.host_lost_seconds
    monitor.watching_since = utcnow() - timedelta(hours=2)
    _age(harness, host_id, 4 * beat)
    run(harness, monitor.tick())
    assert harness.client.get(f"/v1/hosts/{host_id}", headers=harness.auth()).json()["status"] == "unhealthy"
    # While unhealthy, its sandboxes' data-plane calls are refused at once, saying why.
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"}, headers=harness.auth())
    assert r.status_code == 503 and r.json()["error"]["details"]["reason"] == "host_unhealthy"
    _age(harness, host_id, lost + 1)
    run(harness, monitor.tick())
    host = harness.client.get(f"/v1/hosts/{host_id}", headers=harness.auth()).json()
    assert host["status"] == "down" and host["sandboxCount"] == 0
    ended = harness.client.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).json()
    assert ended["status"] == "failed" and ended["endReason"].startswith("host lost")
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"}, headers=harness.auth())
    assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active"
    logs = harness.client.get(f"/v1/sandboxes/{sb['id']}/logs", headers=harness.auth()).json()
    assert sum("host lost" in line["message"] for line in logs) == 1
    # It comes back: ready again, and the next host sync removes the container it still holds.
    back = harness.client.post("/v1/agent/heartbeat", json=report(sandboxes=1),
                               headers={"Authorization": f"Bearer {reply['credential']}"})
    assert back.status_code == 200 and back.json()["deadlines"] == {}
    assert harness.client.get(f"/v1/hosts/{host_id}", headers=harness.auth()).json()["status"] == "ready"
    assert second.running_ids() == [sb["id"]]
    run(harness, sync_hosts(services(harness).ctx, services(harness).lifecycle))
    assert second.sandbox_ids() == []


def test_a_host_listing_filters_by_status_and_refuses_an_unknown_one(harness: Harness) -> None:
    harness.client.post("/v1/hosts/local/drain", headers=harness.auth())
    assert len(harness.client.get("/v1/hosts?status=draining", headers=harness.auth()).json()) == 1
    assert harness.client.get("/v1/hosts?status=ready", headers=harness.auth()).json() == []
    r = harness.client.get("/v1/hosts?status=sleepy", headers=harness.auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"


def test_an_embedded_agent_that_stops_answering_goes_down(tmp_path: Path, database: str | None) -> None:
    # Beats this short: each tick below asks the embedded agent again.
    for h in make_harness(tmp_path, database=database, host_lost_seconds=5.0, host_heartbeat_seconds=0.01):
        monitor = services(h).host_monitor
        sb = h.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=h.auth()).json()
        monitor.watching_since = utcnow() - timedelta(hours=1)
        h.agent.faults.unreachable = True  # the agent stops answering
        _age(h, "local", 10)
        run(h, monitor.tick())
        assert h.client.get("/v1/hosts/local", headers=h.auth()).json()["status"] == "down"
        assert h.client.get(f"/v1/sandboxes/{sb['id']}", headers=h.auth()).json()["endReason"].startswith(
            "host lost")
        h.agent.faults.unreachable = False
        time.sleep(0.05)
        run(h, monitor.tick())
        assert h.client.get("/v1/hosts/local", headers=h.auth()).json()["status"] == "ready"


def test_concurrent_joins_with_one_token_make_one_host(harness: Harness) -> None:
    token = new_token(harness)["token"]

    async def race() -> list[int]:
        joins = services(harness).joins

        async def one(i: int) -> int:
            try:
                await joins.join(new_host_id(), JoinRequest.model_validate(
                    {"token": token, "report": report(address=f"http://10.9.0.{i + 2}:7001")}))
                return 201
            except Exception:  # noqa: BLE001 - the refusal is what is counted
                return 401
        return list(await asyncio.gather(*(one(i) for i in range(8))))

    assert sorted(run(harness, race())) == [201] + [401] * 7
    assert len(harness.client.get("/v1/hosts", headers=harness.auth()).json()) == 2


def test_a_fleet_gets_its_built_in_templates_from_the_first_host_that_offers_them(
        harness: Harness, second: RunningAgent) -> None:
    token = new_token(harness)["token"]
    offered = {"builtinImages": {"extra": "oci:/nonexistent:latest"}}
    reply = join(harness, token, **offered).json()
    template: dict[str, Any] = {}

    def built() -> bool:
        template.update(harness.client.get("/v1/templates/tpl_extra", headers=harness.auth()).json())
        return template.get("status") == "ready"
    eventually(built)
    # Built on the host that offered it (its image ref is that machine's own), by no user.
    assert len(second.builds) == 1 and harness.agent.builds == []
    assert second.builds[0]["ref"] == "oci:/nonexistent:latest" and second.builds[0]["steps"] == []
    assert template["public"] is True and template["ownerId"] is None
    # Offered again in every heartbeat: built once.
    for _ in range(3):
        harness.client.post("/v1/agent/heartbeat", json=report(**offered),
                            headers={"Authorization": f"Bearer {reply['credential']}"})
    assert len(second.builds) == 1


def test_a_host_that_refuses_for_room_at_create_time_hands_the_spawn_to_another(
        harness: Harness, second: RunningAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    reply = joined(harness, second)
    local = services(harness).ctx.agents.clients["local"]

    async def full(_spec: Any) -> Any:  # its own view is fuller than its last report said
        raise HostNoCapacityError("no free sandbox network interface on this host")
    monkeypatch.setattr(local.sandboxes, "create", full)
    # The embedded host is emptier, so it is tried first; the spawn lands on the joined one.
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(Host).where(Host.id == reply["hostId"]).values(total_vcpus=1))
        session.commit()
    sb = harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth()).json()
    assert sb["status"] == "running" and sb["hostId"] == reply["hostId"], sb
    logs = harness.client.get(f"/v1/sandboxes/{sb['id']}/logs", headers=harness.auth()).json()
    assert any(f"host local refused the sandbox; trying host {reply['hostId']}" == e["message"] for e in logs)
    # Both refusing: the boot fails, saying why, and holds no reservation.
    monkeypatch.setattr(second_client(harness, reply["hostId"]).sandboxes, "create", full)
    failed = harness.client.post(SPAWN, json={"templateId": "tpl_python"}, headers=harness.auth()).json()
    assert failed["status"] == "failed" and "no free sandbox network interface" in failed["endReason"]


def second_client(h: Harness, host_id: str) -> Any:
    return services(h).ctx.agents.clients[host_id]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_heartbeat_never_waits_behind_a_spawn_placing_on_its_host(
        tmp_path: Path, database: str | None) -> None:
    """On PostgreSQL, where spawns to one host hold its placement row until they commit."""
    gen = make_harness(tmp_path, database=database)
    h = next(gen)
    with RunningAgent(tmp_path / "agent-2") as agent:
        services(h).ctx.agents.factory = lambda _address, _secret: agent.client()
        reply = joined(h)
        sessions = services(h).ctx.sessions

        async def beat_while_placing() -> float:
            async with sessions() as session:
                assert await lock_host(session, reply["hostId"]) is not None
                loop = asyncio.get_running_loop()
                started = loop.time()
                beat = await asyncio.wait_for(services(h).joins.heartbeat(
                    reply["credential"], HostReport.model_validate(report())), timeout=10)
                assert beat.host_id == reply["hostId"]
                return loop.time() - started
        assert run(h, beat_while_placing()) < 5
    gen.close()
