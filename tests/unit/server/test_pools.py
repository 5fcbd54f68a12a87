"""Warm pools over a real database (SQLite and PostgreSQL): refill, claim, max age, capacity,
a smaller size, a rebuild, a template deleted, a host down, and never one sandbox twice,
including two replicas claiming at once. The hosts record what the control plane asks of
them (their own behaviour is the agent's tests' and the integration tests')."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from qbox.core.errors import HostNoCapacityError, HostUnavailableError, QboxError
from qbox.core.states import SandboxState
from qbox.core.timefmt import utcnow
from qbox.protocol.code import Context, Contexts
from qbox.protocol.sandboxes import SandboxClaim, SandboxInfo, SandboxSpec
from qbox.server.db.tables import Host, HostPlacement, Sandbox, Template, User, WarmSandbox
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.host_view import OnHost, compare
from qbox.server.services.hostsync import sync_host
from qbox.server.services.lifecycle import SandboxLifecycle
from qbox.server.services.placement import Placement
from qbox.server.services.pools import DEADLINE_SLACK, WarmPools, pool_size
from qbox.server.services.quotas import QuotaService
from qbox.server.services.sandbox_startup import SandboxBoots
from qbox.server.services.sandboxes import SandboxService, SpawnRequest
from qbox.server.settings import ServerSettings
from tests.unit.server.service_db import HOSTS, OWNER, TEMPLATE, service_context

DIGEST = "sha256:" + "a" * 64
MEMBER = "usr_member"


@dataclass
class PoolHost:
    """A host that boots, lists, claims and deletes what it is told, and remembers it."""

    running: dict[str, SandboxSpec] = field(default_factory=dict)
    claims: dict[str, SandboxClaim] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    fail_create: QboxError | None = None
    fail_claim: QboxError | None = None
    # How many times an eager sandbox's default context still answers "starting".
    kernel_starts_after: int = 0
    kernel_polls: dict[str, int] = field(default_factory=dict)

    @property
    def sandboxes(self) -> PoolHost:
        return self

    @property
    def code(self) -> PoolHost:
        return self

    async def contexts(self, sandbox_id: str) -> Contexts:
        """An eager sandbox's default context: starting, then idle; a lazy one has none."""
        await asyncio.sleep(0)
        if self.running[sandbox_id].code_interpreter != "eager":
            return Contexts(contexts=[])
        polls = self.kernel_polls[sandbox_id] = self.kernel_polls.get(sandbox_id, 0) + 1
        state = "starting" if polls <= self.kernel_starts_after else "idle"
        return Contexts(contexts=[Context(
            id="ctx_default", language="python", cwd="/home/user", is_default=True,
            kernel_name="python3", created_at=utcnow(), last_used_at=None, state=state)])

    async def create(self, spec: SandboxSpec) -> None:
        await asyncio.sleep(0)
        if self.fail_create is not None:
            raise self.fail_create
        self.running[spec.id] = spec

    async def list(self) -> list[SandboxInfo]:
        return [SandboxInfo(id=sandbox_id, status="running") for sandbox_id in self.running]

    async def claim(self, sandbox_id: str, claim: SandboxClaim) -> SandboxInfo:
        await asyncio.sleep(0)
        if self.fail_claim is not None:
            raise self.fail_claim
        assert sandbox_id in self.running, "claimed a sandbox the host does not run"
        assert sandbox_id not in self.claims, "claimed twice"
        self.claims[sandbox_id] = claim
        return SandboxInfo(id=sandbox_id, status="running")

    async def delete(self, sandbox_id: str) -> None:
        self.running.pop(sandbox_id, None)
        self.deleted.append(sandbox_id)

    async def aclose(self) -> None:
        return None


@dataclass
class Replica:
    """One control plane's services on the shared database."""

    ctx: ServiceContext
    pools: WarmPools
    sandboxes: SandboxService
    hosts: dict[str, PoolHost]

    async def settle(self) -> None:
        """Let every pooled boot in flight finish."""
        while self.pools._boots:
            await asyncio.gather(*self.pools._boots.values(), return_exceptions=True)

    async def fill(self) -> None:
        await self.pools.tick()
        await self.settle()


def replica(ctx: ServiceContext, hosts: dict[str, PoolHost] | None = None) -> Replica:
    hosts = hosts or {host_id: PoolHost() for host_id in HOSTS}
    for host_id, host in hosts.items():
        ctx.agents.add(host_id, host)  # type: ignore[arg-type]
    lifecycle = SandboxLifecycle(ctx)
    pools = WarmPools(ctx, Placement(ctx))
    sandboxes = SandboxService(ctx, lifecycle, SandboxBoots(ctx, lifecycle), QuotaService(ctx), pools)
    return Replica(ctx, pools, sandboxes, hosts)


async def prepare(ctx: ServiceContext, *, size: int = 2, vcpus: int = 8, memory_mb: int = 16384) -> None:
    async with ctx.sessions() as session:
        await session.execute(update(Host).values(
            status="ready", total_vcpus=vcpus, total_memory_mb=memory_mb, runtimes=["crun"], images=[DIGEST]))
        await session.execute(update(Template).where(Template.id == TEMPLATE).values(
            image_digest=DIGEST, warm_pool_size=size, default_vcpus=1, default_memory_mb=512,
            default_disk_mb=2048, envs={"FROM_TEMPLATE": "1"}, build_generation=1, public=True))
        session.add(User(id=MEMBER, email="member@example.com", role="member"))
        # As hosts get when they are registered or join.
        session.add_all(HostPlacement(host_id=host_id, placed=0) for host_id in HOSTS)
        await session.commit()


@pytest.fixture
async def ctx(tmp_path: Path, database: str | None) -> AsyncIterator[ServiceContext]:
    async for context in service_context(tmp_path, database):
        await prepare(context)
        yield context


def admin() -> Principal:
    return Principal(user_id=OWNER, email="lifecycle@example.com", role="admin", api_key_id=None, scopes=())


def member() -> Principal:
    return Principal(user_id=MEMBER, email="member@example.com", role="member", api_key_id=None, scopes=())


async def pooled(ctx: ServiceContext) -> list[WarmSandbox]:
    async with ctx.sessions() as session:
        return list((await session.execute(select(WarmSandbox).order_by(WarmSandbox.id))).scalars().all())


async def set_template(ctx: ServiceContext, **values: Any) -> None:
    async with ctx.sessions() as session:
        await session.execute(update(Template).where(Template.id == TEMPLATE).values(**values))
        await session.commit()


async def test_a_pool_fills_with_ready_sandboxes_spread_over_the_hosts(ctx: ServiceContext) -> None:
    r = replica(ctx)
    before = utcnow()
    await r.fill()
    rows = await pooled(ctx)
    assert [row.status for row in rows] == ["ready", "ready"]
    assert sorted(row.host_id for row in rows) == sorted(HOSTS)  # one on each host
    for row in rows:
        spec = r.hosts[row.host_id].running[row.id]
        # Pools start their kernel at boot by default; the host ends it past its max age.
        assert spec.code_interpreter == "eager" and spec.envs == {"FROM_TEMPLATE": "1"}
        assert spec.deadline_at is not None
        expected = before + r.pools.max_age + DEADLINE_SLACK
        assert abs((spec.deadline_at - expected).total_seconds()) < 5
    # Full: another tick adds nothing.
    await r.fill()
    assert len(await pooled(ctx)) == 2


async def test_an_eager_pooled_sandbox_is_ready_only_once_its_kernel_has_started(
        ctx: ServiceContext) -> None:
    hosts = {host_id: PoolHost(kernel_starts_after=3) for host_id in HOSTS}
    r = replica(ctx, hosts)
    await r.pools.tick()
    await asyncio.sleep(0.02)  # booted, but the kernels still answer "starting"
    assert [row.status for row in await pooled(ctx)] == ["booting", "booting"]
    await r.settle()
    rows = await pooled(ctx)
    assert [row.status for row in rows] == ["ready", "ready"]
    assert all(hosts[row.host_id].kernel_polls[row.id] == 4 for row in rows)


async def test_a_lazy_pool_boots_without_the_kernel_and_an_eager_template_always_with_it(
        ctx: ServiceContext) -> None:
    r = replica(ctx)
    await set_template(ctx, warm_pool_eager=False, warm_pool_size=1)
    await r.fill()
    (row,) = await pooled(ctx)
    assert r.hosts[row.host_id].running[row.id].code_interpreter == "lazy"


async def test_a_spawn_claims_a_pooled_sandbox_with_its_own_owner_envs_labels_and_limits(
        ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    before = {row.id for row in await pooled(ctx)}
    request = SpawnRequest(template_id=TEMPLATE, labels={"team": "a"}, envs={"MINE": "x"},
                           memory_mb=256, timeout_seconds=120)
    sandbox = await r.sandboxes.spawn(member(), request, wait_seconds=None)
    assert sandbox.id in before and sandbox.from_pool and sandbox.status == SandboxState.RUNNING
    assert (sandbox.owner_id, sandbox.labels, sandbox.envs) == (MEMBER, {"team": "a"}, {"MINE": "x"})
    assert (sandbox.vcpus, sandbox.memory_mb, sandbox.disk_size_mb) == (1, 256, 2048)
    claim = r.hosts[sandbox.host_id or ""].claims[sandbox.id]
    assert claim.envs == {"FROM_TEMPLATE": "1", "MINE": "x", "QBOX_SANDBOX_ID": sandbox.id,
                          "QBOX_TEMPLATE_ID": TEMPLATE}
    assert (claim.vcpus, claim.memory_mb, claim.deadline_at) == (1, 256, sandbox.deadline_at)
    assert sandbox.id not in {row.id for row in await pooled(ctx)}
    assert r.pools.wake.is_set()  # the refill is woken at once
    # A second claim gets the other one; with the pool empty, a cold boot.
    second = await r.sandboxes.spawn(member(), SpawnRequest(template_id=TEMPLATE), wait_seconds=None)
    assert second.from_pool and second.id in before and second.id != sandbox.id
    cold = await r.sandboxes.spawn(member(), SpawnRequest(template_id=TEMPLATE), wait_seconds=5)
    assert not cold.from_pool and cold.id not in before and cold.status == SandboxState.RUNNING
    # And the pool refills.
    await r.fill()
    assert len(await pooled(ctx)) == 2


async def test_a_request_the_pool_cannot_match_boots_cold(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    for request in (SpawnRequest(template_id=TEMPLATE, memory_mb=1024),  # more than pooled
                    SpawnRequest(template_id=TEMPLATE, vcpus=2),
                    SpawnRequest(template_id=TEMPLATE, disk_size_mb=4096),
                    SpawnRequest(template_id=TEMPLATE, allow_internet_access=False)):
        sandbox = await r.sandboxes.spawn(admin(), request, wait_seconds=5)
        assert not sandbox.from_pool, request
    assert len(await pooled(ctx)) == 2


async def test_a_claim_over_quota_is_refused_and_leaves_the_pool_whole(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    async with ctx.sessions() as session:
        session.add_all(Sandbox(id=f"sb_quota{n}", owner_id=MEMBER, template_id=TEMPLATE, host_id=HOSTS[0],
                                status="running", vcpus=1, memory_mb=512, timeout_seconds=60)
                        for n in range(ctx.settings.quota_sandboxes))
        await session.commit()
    with pytest.raises(QboxError) as refused:
        await r.sandboxes.spawn(member(), SpawnRequest(template_id=TEMPLATE), wait_seconds=None)
    assert refused.value.code == "quota_exceeded"
    assert [row.status for row in await pooled(ctx)] == ["ready", "ready"]


async def test_a_claim_the_host_refuses_ends_that_sandbox_and_boots_cold(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    for host in r.hosts.values():
        host.fail_claim = HostUnavailableError("host gone quiet")
    sandbox = await r.sandboxes.spawn(admin(), SpawnRequest(template_id=TEMPLATE), wait_seconds=5)
    assert not sandbox.from_pool and sandbox.status == SandboxState.RUNNING
    async with ctx.sessions() as session:
        failed = (await session.execute(select(Sandbox).where(Sandbox.from_pool.is_(True)))).scalars().one()
    assert failed.status == SandboxState.FAILED
    assert failed.end_reason == "boot failed: its pooled sandbox could not be claimed: host gone quiet"
    assert failed.id in r.hosts[failed.host_id or ""].deleted


async def test_pooled_sandboxes_count_against_host_capacity(ctx: ServiceContext) -> None:
    # One host with room for two 512 MB sandboxes: a pool of five takes both places.
    async with ctx.sessions() as session:
        await session.execute(update(Host).where(Host.id == HOSTS[1]).values(status="down"))
        await session.execute(update(Host).where(Host.id == HOSTS[0]).values(total_memory_mb=1024))
        await session.commit()
    await set_template(ctx, warm_pool_size=5)
    r = replica(ctx)
    await r.fill()
    assert len(await pooled(ctx)) == 2
    # The pooled sandboxes hold the room: a request they cannot serve finds none.
    with pytest.raises(HostNoCapacityError):
        await r.sandboxes.spawn(admin(), SpawnRequest(template_id=TEMPLATE, disk_size_mb=1024),
                                wait_seconds=None)
    # One that they can is served from them.
    assert (await r.sandboxes.spawn(admin(), SpawnRequest(template_id=TEMPLATE), wait_seconds=None)).from_pool


async def test_a_pooled_sandbox_past_its_max_age_is_replaced(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    old = {row.id for row in await pooled(ctx)}
    later = utcnow() + r.pools.max_age + timedelta(seconds=1)
    ctx.clock = lambda: later
    # Too old to be claimed, even before the loop removes it.
    cold = await r.sandboxes.spawn(admin(), SpawnRequest(template_id=TEMPLATE), wait_seconds=5)
    assert not cold.from_pool
    await r.fill()
    fresh = {row.id for row in await pooled(ctx)}
    assert len(fresh) == 2 and not fresh & old
    assert old <= {sandbox_id for host in r.hosts.values() for sandbox_id in host.deleted}


async def test_a_smaller_pool_sheds_the_extra_ones(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    await set_template(ctx, warm_pool_size=1)
    removed = await r.pools.prune()
    assert len(removed) == 1 and len(await pooled(ctx)) == 1
    assert removed[0] in {sandbox_id for host in r.hosts.values() for sandbox_id in host.deleted}
    await set_template(ctx, warm_pool_size=0)
    await r.fill()
    assert await pooled(ctx) == []


async def test_a_rebuild_replaces_the_pool_with_sandboxes_of_the_new_build(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    old = {row.id for row in await pooled(ctx)}
    new_digest = "sha256:" + "b" * 64
    async with ctx.sessions() as session:
        await session.execute(update(Host).values(images=[DIGEST, new_digest]))
        await session.commit()
    await set_template(ctx, build_generation=2, image_digest=new_digest)
    await r.fill()
    rows = await pooled(ctx)
    assert len(rows) == 2 and not {row.id for row in rows} & old
    assert {row.image_digest for row in rows} == {new_digest}
    assert old <= {sandbox_id for host in r.hosts.values() for sandbox_id in host.deleted}


async def test_a_deleted_template_takes_its_pool_with_it(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    old = {row.id for row in await pooled(ctx)}
    assert await r.pools.drain(TEMPLATE) == 2
    assert await pooled(ctx) == []
    assert old == {sandbox_id for host in r.hosts.values() for sandbox_id in host.deleted}
    assert all(not host.running for host in r.hosts.values())


async def test_a_down_host_loses_its_pooled_rows_and_the_pool_refills_elsewhere(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    async with ctx.sessions() as session:
        await session.execute(update(Host).where(Host.id == HOSTS[0]).values(status="down"))
        await session.commit()
    await r.fill()
    rows = await pooled(ctx)
    assert [row.host_id for row in rows] == [HOSTS[1]] * 2
    assert r.hosts[HOSTS[0]].deleted == []  # a down host is not asked


async def test_a_failed_boot_drops_its_row_and_backs_off(ctx: ServiceContext) -> None:
    r = replica(ctx)
    for host in r.hosts.values():
        host.fail_create = HostUnavailableError("no image")
    await r.fill()
    assert await pooled(ctx) == []
    for host in r.hosts.values():
        host.fail_create = None
    await r.fill()  # still backing off
    assert await pooled(ctx) == []
    r.pools._failures.clear()
    await r.fill()
    assert len(await pooled(ctx)) == 2


async def test_host_sync_knows_pooled_sandboxes_and_drops_the_ones_their_host_lost(ctx: ServiceContext) -> None:
    r = replica(ctx)
    await r.fill()
    rows = {row.host_id: row.id for row in await pooled(ctx)}
    # The first host lost its pooled sandbox; the second still runs its own.
    r.hosts[HOSTS[0]].running.clear()
    ctx.agents.to_sweep.add(HOSTS[1])  # a sweep would remove strangers: a pooled one is none
    await sync_host(ctx, SandboxLifecycle(ctx), HOSTS[0])
    diff = await sync_host(ctx, SandboxLifecycle(ctx), HOSTS[1])
    assert diff.strangers == [] and r.hosts[HOSTS[1]].deleted == []
    assert {row.id for row in await pooled(ctx)} == {rows[HOSTS[1]]}


def test_the_host_view_decides_for_pooled_sandboxes() -> None:
    running = {"sb_ready": OnHost("running"), "sb_booting": OnHost("running"), "sb_x": OnHost("running")}
    pooled = {"sb_ready": "ready", "sb_booting": "booting", "sb_lost": "ready"}
    serving = compare("h1", {}, running, at_start=False, sweep=True, pooled=pooled)
    assert serving.strangers == ["sb_x"] and serving.pooled_gone == ["sb_lost"]
    # At start a pooled boot can never finish: it goes, off the host too.
    start = compare("h1", {}, running, at_start=True, pooled=pooled)
    assert start.pooled_gone == ["sb_booting", "sb_lost"] and start.pooled_on_host == ["sb_booting"]
    assert start.remove_from_host == ["sb_booting", "sb_x"]


async def test_concurrent_spawns_never_get_the_same_pooled_sandbox(ctx: ServiceContext) -> None:
    await set_template(ctx, warm_pool_size=3)
    r = replica(ctx)
    await r.fill()
    spawned = await asyncio.gather(*(r.sandboxes.spawn(admin(), SpawnRequest(template_id=TEMPLATE),
                                                       wait_seconds=5) for _ in range(6)))
    from_pool = [s.id for s in spawned if s.from_pool]
    assert len(from_pool) == 3 and len(set(from_pool)) == 3
    assert len({s.id for s in spawned}) == 6


async def test_two_replicas_claiming_at_once_never_share_a_pooled_sandbox(
        tmp_path: Path, database: str | None) -> None:
    async for first in service_context(tmp_path, database):
        await prepare(first, size=4)
        async for second in service_context(tmp_path, database, seed=False):
            hosts = {host_id: PoolHost() for host_id in HOSTS}
            a, b = replica(first, hosts), replica(second, hosts)
            # Both replicas refill at once: the template's lock keeps the pool at its size.
            await asyncio.gather(a.pools.tick(), b.pools.tick())
            await asyncio.gather(a.settle(), b.settle())
            rows = await pooled(first)
            assert len(rows) == 4 and {row.status for row in rows} == {"ready"}
            spawns = [(a if n % 2 else b).sandboxes.spawn(member() if n % 3 else admin(),
                                                         SpawnRequest(template_id=TEMPLATE), wait_seconds=5)
                      for n in range(8)]
            got = await asyncio.gather(*spawns)
            claimed = [s.id for s in got if s.from_pool]
            assert sorted(claimed) == sorted(row.id for row in rows)  # each exactly once
            assert sum(len(host.claims) for host in hosts.values()) == 4
            assert await pooled(first) == []


def test_the_effective_pool_size() -> None:
    settings = ServerSettings(agent_secret="x", warm_pool_default=3, warm_pool_max_size=5)
    assert pool_size(Template(warm_pool_size=None, builtin=True), settings) == 3
    assert pool_size(Template(warm_pool_size=None, builtin=False), settings) == 0
    assert pool_size(Template(warm_pool_size=9, builtin=False), settings) == 5
    assert pool_size(Template(warm_pool_size=0, builtin=True), settings) == 0


class CountingSessions:
    """The context's session factory, counting the sessions the calling task opens."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.inner = ctx.sessions
        self.task: asyncio.Task[Any] | None = None
        self.opened = 0

    def __call__(self) -> Any:
        if asyncio.current_task() is self.task:
            self.opened += 1
        return self.inner()


async def test_a_spawn_opens_one_database_session_pooled_or_cold(ctx: ServiceContext) -> None:
    await set_template(ctx, warm_pool_size=1)
    r = replica(ctx)
    await r.fill()
    counting = CountingSessions(ctx)
    ctx.sessions = counting  # type: ignore[assignment]
    counting.task = asyncio.current_task()
    pooled_one = await r.sandboxes.spawn(member(), SpawnRequest(template_id=TEMPLATE), wait_seconds=None)
    assert pooled_one.from_pool and counting.opened == 1
    counting.opened = 0
    cold = await r.sandboxes.spawn(member(), SpawnRequest(template_id=TEMPLATE), wait_seconds=5)
    assert not cold.from_pool and cold.status == SandboxState.RUNNING and counting.opened == 1


async def test_refills_and_cold_spawns_on_two_replicas_at_once_all_complete(
        tmp_path: Path, database: str | None) -> None:
    # Spawns lock a host and then share the template's row; refills must not lock the other way.
    async for first in service_context(tmp_path, database):
        await prepare(first, size=4)
        async for second in service_context(tmp_path, database, seed=False):
            hosts = {host_id: PoolHost() for host_id in HOSTS}
            a, b = replica(first, hosts), replica(second, hosts)
            cold = SpawnRequest(template_id=TEMPLATE, memory_mb=1024)  # never from the pool
            done = await asyncio.wait_for(asyncio.gather(
                a.pools.tick(), b.pools.tick(),
                *(r.sandboxes.spawn(admin(), cold, wait_seconds=5) for r in (a, b, a, b))), timeout=60)
            assert all(not s.from_pool for s in done[2:])
            await asyncio.gather(a.settle(), b.settle())
            assert len(await pooled(first)) == 4
