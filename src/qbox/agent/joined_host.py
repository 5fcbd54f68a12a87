"""A running agent as a member of a control plane: it joins (or finds host.json), then
heartbeats until stopped. Started once the agent serves (runtime probed, sandboxes loaded,
listening), so what it reports is true and the control plane can dial it straight away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime

import httpx
from fastapi import FastAPI

from qbox.agent.app import AgentState, host_health
from qbox.agent.heartbeat import Heartbeats
from qbox.agent.cluster_tls import ListenerCert, TrustRefused, control_plane_trust, keep_certificate
from qbox.agent.joining import MembershipEnded, control_plane_url, membership
from qbox.agent.lifecycle import FENCED_REASON, SandboxEvent
from qbox.protocol.host import HostReport

log = logging.getLogger("qbox.agent.joining")

# Per call; a heartbeat's own timeout is its interval.
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_FENCE_KILLS_AT_ONCE = 16


class JoinedHost:
    """The agent's side of the heartbeat (heartbeat.FencedHost)."""

    def __init__(self, agent: AgentState, address: str) -> None:
        self._agent = agent
        self._address = address

    async def report(self) -> HostReport:
        health = await host_health(self._agent)
        return HostReport.model_validate({**dict(health), "address": self._address})

    async def fence(self) -> int:
        manager = self._agent.sandboxes
        # Several at once: each kill waits on the runtime, and every second of a fence is one
        # more that sandboxes the control plane has declared lost go on running.
        at_once = asyncio.Semaphore(_FENCE_KILLS_AT_ONCE)

        async def kill(sandbox_id: str) -> bool:
            async with at_once:
                try:
                    return await manager.end(sandbox_id, SandboxEvent.FENCED, FENCED_REASON)
                except Exception:  # noqa: BLE001 - the others must still be killed
                    log.exception("fencing: killing %s failed", sandbox_id)
                    return False

        return sum(await asyncio.gather(*(kill(s.id) for s in manager)))

    def apply_deadlines(self, deadlines: Mapping[str, datetime | None]) -> None:
        self._agent.sandboxes.apply_deadlines(deadlines)


async def take_part(app: FastAPI, address: str,
                    client: httpx.AsyncClient | None = None,
                    listener: ListenerCert | None = None) -> None:
    """Join (unless joined before) and heartbeat until cancelled; MembershipEnded when
    the control plane refuses this host, or is not the one its operator said to trust.
    ``client`` replaces the real one (tests); ``listener``: the agent serves HTTPS."""
    agent: AgentState = app.state.agent
    settings = agent.settings
    host = JoinedHost(agent, address)
    try:
        trust = await control_plane_trust(settings.data_dir, control_plane_url(settings) or "",
                                          ca_cert=settings.ca_cert, ca_hash=settings.ca_hash)
    except TrustRefused as exc:
        raise MembershipEnded(str(exc)) from None
    async with client or httpx.AsyncClient(timeout=_TIMEOUT, verify=trust or True) as http:
        joined = await membership(settings, http, app.state.secret, host.report,
                                  listener=listener)
        if listener is None:
            await Heartbeats(http, joined, host).run()
            return
        renewing = asyncio.create_task(keep_certificate(http, joined.control_plane, joined.credential,
                                                        listener))
        try:
            await Heartbeats(http, joined, host).run()
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
