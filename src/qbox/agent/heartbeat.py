"""Heartbeats of a joined agent, and fencing when no control plane answers them.

Every ``heartbeatSeconds`` the agent sends its ``HostReport`` to ``POST /v1/agent/heartbeat``
with its host credential. An answer brings the deadlines of this host's sandboxes (which
replace the agent's) and the intervals to keep. When nothing answered for ``fenceSeconds``
the agent fences itself: the control plane has declared the host lost by then and ended its
sandboxes on its side, so the agent kills them on its own (one WARNING line says so). It
goes on beating; the first answer after that is logged, and the control plane's host sync
reconciles the rest. A 401 means the host was removed or its credential revoked: the agent
fences at once and stops (``MembershipEnded``). Nothing else ends the loop: connection
errors, timeouts and 5xx are only "not answered".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx

from qbox.agent.joining import HOST_FILE, Membership, MembershipEnded
from qbox.protocol.host import HeartbeatReply, HostReport

log = logging.getLogger("qbox.agent.heartbeat")


class FencedHost(Protocol):
    """What the heartbeat needs of the agent it speaks for."""

    async def report(self) -> HostReport: ...

    async def fence(self) -> int:
        """Kill every sandbox; how many were running."""
        ...

    def apply_deadlines(self, deadlines: Mapping[str, datetime | None]) -> None: ...


@dataclass
class FenceClock:
    """When the agent must fence itself: the pure decision of the loop."""

    fence_seconds: float
    last_answer: float
    fenced: bool = False

    def answered(self, now: float) -> bool:
        """An answer came at ``now``; True when it ends a fence (worth a log line)."""
        ended_fence = self.fenced
        self.fenced, self.last_answer = False, now
        return ended_fence

    def silent_for(self, now: float) -> float:
        return now - self.last_answer

    def due(self, now: float) -> bool:
        """Fence now: not fenced yet and nothing answered for the whole window."""
        return not self.fenced and self.silent_for(now) >= self.fence_seconds


class Heartbeats:
    def __init__(self, client: httpx.AsyncClient, joined: Membership, host: FencedHost, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._joined = joined
        self._host = host
        self._clock = clock
        self.interval = joined.heartbeat_seconds
        # The window starts with the agent: a control plane gets a whole one to answer.
        self.fence = FenceClock(joined.fence_seconds, clock())

    async def beat(self) -> HeartbeatReply | None:
        """One heartbeat: the reply, or None when not answered. MembershipEnded on 401."""
        report = await self._host.report()
        try:
            response = await self._client.post(
                f"{self._joined.control_plane}/v1/agent/heartbeat", json=report.wire(),
                headers={"Authorization": f"Bearer {self._joined.credential}"},
                timeout=max(self.interval, 1.0))
        except httpx.HTTPError as exc:
            log.debug("heartbeat to %s: %s", self._joined.control_plane, exc)
            return None
        if response.status_code == 401:
            raise MembershipEnded(
                f"the control plane at {self._joined.control_plane} no longer accepts host "
                f"{self._joined.host_id} (removed, or its credential revoked); delete "
                f"{HOST_FILE} in the data dir and join again with a new token")
        if response.status_code != 200:
            log.debug("heartbeat to %s: HTTP %s", self._joined.control_plane,
                      response.status_code)
            return None
        try:
            return HeartbeatReply.model_validate(response.json())
        except ValueError:
            log.warning("heartbeat: a malformed reply from %s", self._joined.control_plane)
            return None

    async def step(self) -> None:
        """Beat once and act on the outcome (apply the reply, or fence when it is time)."""
        try:
            reply = await self.beat()
        except MembershipEnded:
            killed = await self._host.fence()
            log.warning("fenced: host %s was refused by the control plane; killed %d "
                        "sandbox(es)", self._joined.host_id, killed)
            raise
        now = self._clock()
        if reply is not None:
            if self.fence.answered(now):
                log.warning("the control plane answered again; no longer fenced")
            self.interval = reply.heartbeat_seconds
            self.fence.fence_seconds = reply.fence_seconds
            self._host.apply_deadlines(reply.deadlines)
        elif self.fence.due(now):
            silent = self.fence.silent_for(now)
            self.fence.fenced = True
            killed = await self._host.fence()
            log.warning("fenced: no control plane answered for %.0f s; killed %d sandbox(es)",
                        silent, killed)

    async def run(self) -> None:
        """Until cancelled, or MembershipEnded; one failing step is logged, never fatal."""
        while True:
            started = self._clock()
            try:
                await self.step()
            except MembershipEnded:
                raise
            except Exception:  # noqa: BLE001 - the loop must outlive any one beat's failure
                log.exception("heartbeat failed")
            await asyncio.sleep(max(0.0, self.interval - (self._clock() - started)))
