"""Hosts and HostTokens (and their async twins) against the real control plane over its in-process agent:
the embedded host's figures, drain and uncordon as spawns see them, join tokens an agent joins with once,
and a removed host's credential refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from qbox import (
    AsyncHosts,
    AsyncHostTokens,
    ConflictError,
    ConnectionConfig,
    Host,
    HostNoCapacityError,
    Hosts,
    HostTokens,
    NotFoundError,
    PermissionDeniedError,
    QboxError,
    Sandbox,
    ValidationError,
)
from qbox.protocol.host import HostReport, JoinRequest
from tests.unit.sdk.test_async import describe, public_members
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)  # the SDK's side: one database is enough


def config(h: Harness, key: str | None = None) -> ConnectionConfig:
    # The SDK's requests go through the app in-process.
    transport = httpx.MockTransport(lambda request: h.client.send(request))
    return ConnectionConfig(api_key=key or h.admin_key, base_url="http://testserver", max_retries=0,
                            transport=transport)


def async_config(h: Harness) -> ConnectionConfig:
    """For the async twins: the app's answer (from the blocking test client) handed over whole."""

    async def send(request: httpx.Request) -> httpx.Response:
        await request.aread()
        answer = h.client.send(request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return ConnectionConfig(api_key=h.admin_key, base_url="http://testserver", max_retries=0,
                            transport=httpx.MockTransport(send))


def only_host(h: Harness) -> Host:
    hosts = Hosts.list(config=config(h))
    assert len(hosts) == 1, hosts
    return hosts[0]


def only_embedded(h: Harness) -> Host:
    (embedded,) = [host for host in Hosts.list(config=config(h)) if host.kind == "embedded"]
    return embedded


def report() -> HostReport:
    return HostReport(version="test", runtime="crun", runtimes=["crun"], sandboxes=0, hostname="worker-7",
                      address="http://192.0.2.7:7070")


def join(h: Harness, token: str) -> httpx.Response:
    """What ``qbox agent --join`` sends: the token and the agent's own report."""
    return h.client.post("/v1/agent/join", json=JoinRequest(token=token, report=report()).wire())


def heartbeat(h: Harness, credential: str) -> httpx.Response:
    return h.client.post("/v1/agent/heartbeat", json=report().wire(), headers={"Authorization": f"Bearer {credential}"})


def test_the_embedded_agent_is_a_ready_host_whose_reservations_follow_its_sandboxes(harness: Harness) -> None:
    host = only_host(harness)
    assert host.kind == "embedded" and host.is_ready and host.status == "ready"
    assert host.total_vcpus > 0 and host.total_memory_mb > 0 and host.runtimes and host.version
    assert (host.sandbox_count, host.used_vcpus, host.used_memory_mb) == (0, 0, 0)
    same = Hosts.get(host.id, config=config(harness))
    assert (same.id, same.hostname, same.kind, same.created_at) == (host.id, host.hostname, host.kind,
                                                                     host.created_at)
    sandbox = Sandbox.create("python", config=config(harness))
    try:
        info = sandbox.get_info()
        busy = Hosts.get(host.id, config=config(harness))
        assert busy.sandbox_count == 1
        assert (busy.used_vcpus, busy.used_memory_mb) == (info.vcpus, info.memory_mb)
    finally:
        sandbox.kill()
    assert Hosts.get(host.id, config=config(harness)).sandbox_count == 0


def test_a_drained_host_takes_no_spawn_until_uncordoned(harness: Harness) -> None:
    admin = config(harness)
    host = only_host(harness)
    drained = Hosts.drain(host.id, config=admin)
    assert drained.id == host.id and drained.status == "draining" and not drained.is_ready
    assert Hosts.get(host.id, config=admin).status == "draining"
    assert [h.id for h in Hosts.list("draining", config=admin)] == [host.id]
    assert Hosts.list("ready", config=admin) == []
    with pytest.raises(HostNoCapacityError):
        Sandbox.create("python", config=admin)
    back = Hosts.uncordon(host.id, config=admin)
    assert back.is_ready and Hosts.get(host.id, config=admin).status == "ready"
    Sandbox.create("python", config=admin).kill()


def test_an_unknown_host_is_not_found_and_members_may_not_see_hosts(harness: Harness) -> None:
    with pytest.raises(NotFoundError):
        Hosts.get("host_nope", config=config(harness))
    with pytest.raises(NotFoundError):
        Hosts.drain("host_nope", config=config(harness))
    host = only_host(harness)
    _, key = add_user_with_key(harness.settings.data_dir)
    member = config(harness, key)
    for call in (lambda: Hosts.list(config=member), lambda: Hosts.get(host.id, config=member),
                 lambda: Hosts.drain(host.id, config=member), lambda: Hosts.remove(host.id, config=member),
                 lambda: HostTokens.create(config=member), lambda: HostTokens.list(config=member)):
        with pytest.raises(PermissionDeniedError):
            call()
    assert Hosts.get(host.id, config=config(harness)).status == "ready"


def test_a_join_token_is_shown_once_and_joins_one_host_with_its_labels(harness: Harness) -> None:
    admin = config(harness)
    created = HostTokens.create(ttl_seconds=120, labels={"gpu": "true"}, config=admin)
    assert created.token and created.token in created.join_command and created.token not in repr(created)
    assert created.labels == {"gpu": "true"}
    assert created.created_at is not None and created.expires_at is not None
    assert created.expires_at - created.created_at == timedelta(seconds=120)
    (listed,) = HostTokens.list(config=admin)
    assert (listed.id, listed.status, listed.labels, listed.host_id) == (created.id, "active", {"gpu": "true"}, None)
    assert created.token not in str(listed.raw)

    joined = join(harness, created.token)
    assert joined.status_code == 201, joined.text
    host_id = joined.json()["hostId"]
    host = Hosts.get(host_id, config=admin)
    assert (host.kind, host.hostname, host.address, host.labels) == ("joined", "worker-7", "http://192.0.2.7:7070",
                                                                     {"gpu": "true"})
    assert {h.id for h in Hosts.list(config=admin)} == {only_embedded(harness).id, host_id}
    (used,) = HostTokens.list(config=admin)
    assert (used.status, used.host_id, used.is_active) == ("used", host_id, False)
    again = join(harness, created.token)
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_join_token"


def test_a_revoked_token_joins_nothing_and_a_ttl_out_of_range_is_refused(harness: Harness) -> None:
    admin = config(harness)
    created = HostTokens.create(config=admin)
    assert created.expires_at is not None and created.created_at is not None
    assert created.expires_at - created.created_at == timedelta(hours=1)
    HostTokens.revoke(created.id, config=admin)
    (revoked,) = HostTokens.list(config=admin)
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    refused = join(harness, created.token)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_join_token"
    for ttl in (59, 604801):
        with pytest.raises(ValidationError):
            HostTokens.create(ttl_seconds=ttl, config=admin)
    with pytest.raises(NotFoundError):
        HostTokens.revoke("jt_nope", config=admin)
    assert [t.id for t in HostTokens.list(config=admin)] == [created.id]


def test_removing_a_host_revokes_its_credential(harness: Harness) -> None:
    admin = config(harness)
    reply = join(harness, HostTokens.create(config=admin).token).json()
    host_id, credential = reply["hostId"], reply["credential"]
    beat = heartbeat(harness, credential)
    assert beat.status_code == 200, beat.text
    Hosts.remove(host_id, config=admin)
    beat = heartbeat(harness, credential)
    assert beat.status_code == 401 and beat.json()["error"]["code"] == "invalid_host_credential"
    assert host_id not in {h.id for h in Hosts.list(config=admin)}
    with pytest.raises(NotFoundError):
        Hosts.get(host_id, config=admin)
    embedded = only_embedded(harness)
    with pytest.raises(ConflictError):  # qbox up's own host is stopped with qbox up, not removed
        Hosts.remove(embedded.id, config=admin)
    assert Hosts.get(embedded.id, config=admin).is_ready


def test_figures_a_host_never_reported_are_none_and_unknown_fields_are_ignored() -> None:
    host = Host.from_wire({"id": "host_1", "status": "down", "cpuPercent": None, "memoryUsedMb": None,
                           "usedVcpus": 2, "labels": {"gpu": "true"}, "somethingNew": [1]})
    assert (host.cpu_percent, host.memory_used_mb, host.disk_total_mb, host.max_sandboxes) == (None,) * 4
    assert (host.used_vcpus, host.total_vcpus, host.labels, host.is_ready) == (2, 0, {"gpu": "true"}, False)
    assert Host.from_wire({"id": "host_1", "cpuPercent": 12}).cpu_percent == 12.0
    for bad in ({"status": "ready"}, {"id": "host_1", "cpuPercent": "busy"}, {"id": "host_1", "runtimes": "crun"}):
        with pytest.raises(QboxError) as caught:
            Host.from_wire(bad)
        assert caught.value.code == "bad_response"


@pytest.mark.parametrize(("sync_cls", "async_cls"), [(Hosts, AsyncHosts), (HostTokens, AsyncHostTokens)],
                         ids=lambda c: c.__name__)
def test_the_async_twins_have_the_same_methods_and_parameters(sync_cls: type, async_cls: type) -> None:
    sync_members, async_members = public_members(sync_cls), public_members(async_cls)
    assert sorted(sync_members) == sorted(async_members)
    for name, member in sync_members.items():
        assert describe(member) == describe(async_members[name]), name


async def test_the_async_twins_drive_the_same_routes(harness: Harness) -> None:
    admin = async_config(harness)
    (host,) = await AsyncHosts.list(config=admin)
    assert (await AsyncHosts.drain(host.id, config=admin)).status == "draining"
    assert [h.id for h in await AsyncHosts.list("draining", config=admin)] == [host.id]
    assert (await AsyncHosts.uncordon(host.id, config=admin)).is_ready
    assert (await AsyncHosts.get(host.id, config=admin)).status == "ready"
    created = await AsyncHostTokens.create(ttl_seconds=600, labels={"zone": "b"}, config=admin)
    await AsyncHostTokens.revoke(created.id, config=admin)
    (listed,) = await AsyncHostTokens.list(config=admin)
    assert (listed.id, listed.status, listed.labels) == (created.id, "revoked", {"zone": "b"})
    reply = join(harness, (await AsyncHostTokens.create(config=admin)).token).json()
    await AsyncHosts.remove(reply["hostId"], config=admin)
    assert {h.id for h in await AsyncHosts.list(config=admin)} == {host.id}
