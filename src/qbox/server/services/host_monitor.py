"""Which hosts answer: heartbeats judged, the embedded agent asked, lost hosts' sandboxes ended.

Each tick of every replica:

1. asks the embedded agent (``qbox up``'s own, which does not push
   heartbeats) for its health, which counts as its heartbeat;
2. judges every host by the time since its last heartbeat: ``unhealthy``
   after three missed beats, ``down`` after ``QBOX_HOST_LOST_SECONDS``; the
   live sandboxes of a down host end as "host lost";
3. keeps this replica's agent clients in step with the joined hosts.

Silence is counted from the later of the last heartbeat and the moment this
replica could last read the database without a break: a control-plane or
database outage stops every heartbeat from being recorded, and must never
read as every host lost. Marking is a conditional UPDATE on the host's
status and last heartbeat, so of several replicas one marks, and a
heartbeat that lands meanwhile wins; ending goes through the lifecycle,
which ends each sandbox once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update

from qbox.core.errors import QboxError
from qbox.core.states import LIVE_STATES
from qbox.server.db.tables import Host, Sandbox
from qbox.server.services.context import ServiceContext
from qbox.server.services.host_credentials import AgentSecrets
from qbox.server.services.hosts import DOWN, EMBEDDED, JOINED, READY, UNHEALTHY, record_report
from qbox.server.services.lifecycle import Change, LifecycleEvent, SandboxLifecycle, values_of

log = logging.getLogger("qbox.hosts")

MISSED_BEATS = 3


def judge(last_seen: datetime, since: datetime, now: datetime, beat: float, lost: float) -> str:
    """A host's liveness from its last heartbeat and when this replica began watching."""
    silence = (now - max(last_seen, since)).total_seconds()
    if silence > lost:
        return DOWN
    if silence > MISSED_BEATS * beat:
        return UNHEALTHY
    return READY


class HostMonitor:
    def __init__(self, ctx: ServiceContext, lifecycle: SandboxLifecycle, secrets: AgentSecrets) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle
        self.secrets = secrets
        # When this replica last started watching without a break (None: not yet, or broken).
        self.watching_since: datetime | None = None
        self._asked_at: datetime | None = None

    async def tick(self) -> None:
        try:
            await self._tick()
        except Exception:
            self.watching_since = None  # the clock restarts when the database answers again
            raise

    async def _tick(self) -> None:
        await self.ask_embedded()
        now = self.ctx.clock()
        if self.watching_since is None:
            self.watching_since = now
        settings = self.ctx.settings
        async with self.ctx.sessions() as session:
            hosts = list((await session.execute(select(Host))).scalars().all())
        down: list[Host] = []
        for host in hosts:
            if host.removed_at is not None:
                await self.ctx.agents.drop(host.id)
                continue
            if host.kind == JOINED:
                await self.ctx.agents.connect(host.id, host.address, await self.secrets.for_host(host.id))
            status = host.status
            verdict = judge(host.last_seen_at or host.created_at, self.watching_since, now,
                            settings.host_heartbeat_seconds, settings.host_lost_seconds)
            if verdict != READY and verdict != status and (status, verdict) != (DOWN, UNHEALTHY):
                if await self._mark(host, verdict):
                    status = verdict
            self.ctx.agents.liveness[host.id] = status
            if status == DOWN:
                down.append(host)
        if down:
            await self._end_sandboxes(down, now)

    async def ask_embedded(self) -> None:
        """The embedded agent's health, recorded as its heartbeat (a failure is no beat), once
        every heartbeat interval as a joined agent's would come; the monitor ticks more often."""
        now = self.ctx.clock()
        if self._asked_at is not None and (now - self._asked_at).total_seconds() \
                < self.ctx.settings.host_heartbeat_seconds:
            return
        self._asked_at = now
        for host_id, client in list(self.ctx.agents.clients.items()):
            if host_id in self.ctx.agents.addresses:
                continue  # joined: it pushes its own heartbeats
            try:
                health = await client.health()
            except QboxError as exc:
                log.debug("embedded host %s did not answer: %s", host_id, exc.message)
                continue
            async with self.ctx.sessions() as session:
                host = await session.get(Host, host_id)
                if host is None or host.kind != EMBEDDED:
                    continue
                record_report(host, health)
                host.last_seen_at = self.ctx.clock()
                if host.status != READY:
                    log.warning("host %s is answering again (it was %s)", host_id, host.status)
                    self.ctx.agents.to_sweep.add(host_id)
                host.status = READY
                await session.commit()
            self.ctx.agents.liveness[host_id] = READY

    async def _mark(self, host: Host, verdict: str) -> bool:
        async with self.ctx.sessions() as session:
            result = await session.execute(
                update(Host).where(Host.id == host.id, Host.status == host.status,
                                   Host.last_seen_at.is_(host.last_seen_at) if host.last_seen_at is None
                                   else Host.last_seen_at == host.last_seen_at)
                .values(status=verdict))
            await session.commit()
        marked = bool(getattr(result, "rowcount", 0))
        if marked:
            log.warning("host %s is %s: no heartbeat since %s", host.id, verdict,
                        host.last_seen_at.isoformat() if host.last_seen_at else "it was added")
        return marked

    async def _end_sandboxes(self, down: list[Host], now: datetime) -> None:
        """End what is still live on down hosts (again each tick: a replica may have stopped
        midway; one query finds what is left on all of them)."""
        by_id = {host.id: host for host in down}
        async with self.ctx.sessions() as session:
            live = (await session.execute(select(Sandbox.id, Sandbox.host_id).where(
                Sandbox.host_id.in_(list(by_id)), Sandbox.status.in_(values_of(LIVE_STATES))))).all()
        ended: dict[str, int] = {}
        for sandbox_id, on in live:
            host = by_id[str(on)]
            host_id = host.id
            silence = now - (host.last_seen_at or host.created_at)
            change = Change.of(LifecycleEvent.HOST_LOST, host=host_id,
                               seconds=int(silence / timedelta(seconds=1)))
            if await self.lifecycle.end(sandbox_id, change, remove_from_host=False):
                ended[host_id] = ended.get(host_id, 0) + 1
        for host_id, count in ended.items():
            log.warning("host %s is down: %d sandbox(es) marked lost", host_id, count)
