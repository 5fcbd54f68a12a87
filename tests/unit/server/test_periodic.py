"""Background loops: a failing item does not stop the others, a failing tick does not stop the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import HostUnavailableError
from qbox.core.states import SandboxState
from qbox.core.timefmt import utcnow
from qbox.server.services.audit import AuditService
from qbox.server.services.context import ServiceContext
from qbox.server.services.hostsync import sync_hosts
from qbox.server.services.lifecycle import Change, SandboxLifecycle
from qbox.server.services.periodic import Periodic, each
from qbox.server.services.reaper import Reaper
from tests.unit.server.service_db import HostRecorder, add_sandbox, row, service_context


@pytest.fixture
async def ctx(tmp_path: Path, database: str | None) -> AsyncIterator[ServiceContext]:
    async for context in service_context(tmp_path, database):
        yield context


async def test_each_goes_on_after_a_failing_item(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    async def act(item: int) -> int:
        if item == 2:
            raise RuntimeError("item 2 broke")
        if item == 3:
            raise HostUnavailableError("host 3 is down")
        done.append(item)
        return item * 10

    with caplog.at_level(logging.WARNING, logger="qbox.periodic"):
        results = await each("thing", [1, 2, 3, 4], act)
    assert results == {1: 10, 4: 40} and done == [1, 4]
    broke = [r for r in caplog.records if "thing 2" in r.getMessage()]
    assert broke and broke[0].levelno == logging.ERROR and broke[0].exc_info is not None
    # An expected failure (a host that does not answer) is one line, without a traceback.
    down = [r for r in caplog.records if "thing 3" in r.getMessage()]
    assert down and down[0].levelno == logging.WARNING and down[0].exc_info is None
    assert "host 3 is down" in down[0].getMessage()


async def test_a_failing_tick_does_not_stop_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    ticks: list[int] = []
    three = asyncio.Event()

    async def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) >= 3:
            three.set()
        if len(ticks) == 1:
            raise RuntimeError("database is locked")

    loop = Periodic("test loop", 0.01, tick)
    with caplog.at_level(logging.ERROR, logger="qbox.periodic"):
        loop.start()
        try:
            await asyncio.wait_for(three.wait(), 5)
        finally:
            await loop.stop()
    assert ticks[:3] == [0, 1, 2]
    assert any("test loop failed" in r.getMessage() for r in caplog.records)
    stopped_at = len(ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == stopped_at  # stop() really ended it
    await loop.stop()  # and stopping twice is harmless


async def test_first_delay_holds_the_first_tick() -> None:
    ticks: list[float] = []

    async def tick() -> None:
        ticks.append(asyncio.get_running_loop().time())

    loop = Periodic("delayed", 10, tick, first_delay=0.2)
    started = asyncio.get_running_loop().time()
    loop.start()
    try:
        await asyncio.sleep(0.1)
        assert ticks == []
        await asyncio.sleep(0.3)
        assert len(ticks) == 1 and ticks[0] - started >= 0.2
    finally:
        await loop.stop()


class _BrokenFor(SandboxLifecycle):
    """A lifecycle whose end of one sandbox fails (the database said no, a bug)."""

    def __init__(self, ctx: ServiceContext, broken: str) -> None:
        super().__init__(ctx)
        self.broken = broken

    async def end(self, sandbox_id: str, change: Change, *, remove_from_host: bool = True,
                  session: AsyncSession | None = None) -> bool:
        if sandbox_id == self.broken:
            raise RuntimeError("could not end this one")
        return await super().end(sandbox_id, change, remove_from_host=remove_from_host, session=session)


async def test_the_reaper_goes_on_after_a_sandbox_that_fails(ctx: ServiceContext) -> None:
    past = utcnow() - timedelta(seconds=1)
    first = await add_sandbox(ctx, SandboxState.BOOTING, deadline=past)
    second = await add_sandbox(ctx, SandboxState.BOOTING, deadline=past)
    reaper = Reaper(ctx, _BrokenFor(ctx, broken=first), AuditService(ctx))
    assert await reaper.sweep() == [second]
    assert (await row(ctx, second)).status == SandboxState.TERMINATED
    assert (await row(ctx, first)).status == SandboxState.BOOTING
    # The next sweep tries the failed one again.
    assert await Reaper(ctx, SandboxLifecycle(ctx), AuditService(ctx)).sweep() == [first]


async def test_the_host_sync_goes_on_after_a_host_that_fails(ctx: ServiceContext) -> None:
    ctx.agents.add("h1", HostRecorder(fail_with=HostUnavailableError("host h1 is down")))  # type: ignore[arg-type]
    oom = await add_sandbox(ctx, SandboxState.RUNNING, host_id="h2")
    h2 = HostRecorder([{"id": oom, "status": "stopped", "exitReason": "oom"}])
    ctx.agents.add("h2", h2)  # type: ignore[arg-type]
    on_h1 = await add_sandbox(ctx, SandboxState.RUNNING, host_id="h1")
    synced = await sync_hosts(ctx, SandboxLifecycle(ctx))
    assert list(synced) == ["h2"]
    assert [e.sandbox_id for e in synced["h2"].ended] == [oom]
    assert (await row(ctx, oom)).status == SandboxState.FAILED and h2.deleted == [oom]
    assert (await row(ctx, on_h1)).status == SandboxState.RUNNING  # not judged on no answer


async def test_the_host_sync_asks_a_host_only_when_it_runs_something(ctx: ServiceContext) -> None:
    ctx.agents.add("h1", HostRecorder(fail_with=HostUnavailableError("host h1 is down")))  # type: ignore[arg-type]
    booting = await add_sandbox(ctx, SandboxState.BOOTING, host_id="h1")
    # Nothing on h1 is running, so nothing there can have ended: h1 is not asked.
    synced = await sync_hosts(ctx, SandboxLifecycle(ctx))
    assert list(synced) == ["h1"] and synced["h1"].ended == [] and synced["h1"].strangers == []
    await add_sandbox(ctx, SandboxState.RUNNING, host_id="h1")
    assert await sync_hosts(ctx, SandboxLifecycle(ctx)) == {}  # asked now, and it did not answer
    assert (await row(ctx, booting)).status == SandboxState.BOOTING
