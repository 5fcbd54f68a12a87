"""The interactive shells open on this control plane: counted, ended and re-checked.

Each shell is counted against its API key (a dashboard session counts against
its user), at most ``QBOX_SHELL_MAX_PER_KEY`` at once. Revoking a key or
disabling a user ends that principal's shells here at once; every
``QBOX_SHELL_RECHECK_SECONDS`` each shell also checks its credentials again,
so a revocation made on another replica, or an expiry, ends it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext

log = logging.getLogger("qbox.shells")

# WebSocket close codes the control plane chooses itself.
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
# A deleted sandbox's agent closes its shells itself ("exit N"); this long we let it.
SANDBOX_END_GRACE_SECONDS = 1.0


@dataclass(eq=False)
class OpenShell:
    sandbox_id: str
    user_id: str
    api_key_id: str | None
    # True while the credentials the shell was opened with are still good.
    revalidate: Callable[[], Awaitable[bool]]
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_code: int = POLICY_VIOLATION
    end_reason: str = ""
    end_grace: float = 0.0

    @property
    def counted_as(self) -> str:
        return self.api_key_id or f"user:{self.user_id}"

    @property
    def revoked_reason(self) -> str:
        return "api key revoked" if self.api_key_id else "session revoked"

    def end(self, code: int, reason: str, *, grace: float = 0.0) -> None:
        if not self.ended.is_set():
            self.end_code, self.end_reason, self.end_grace = code, reason, grace
            self.ended.set()


class ShellService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._open: set[OpenShell] = set()

    def register(self, principal: Principal, sandbox_id: str,
                 revalidate: Callable[[], Awaitable[bool]]) -> OpenShell | None:
        """Count a new shell; None when its key already has the most it may."""
        shell = OpenShell(sandbox_id, principal.user_id, principal.api_key_id, revalidate)
        if sum(s.counted_as == shell.counted_as for s in self._open) >= self.ctx.settings.shell_max_per_key:
            return None
        self._open.add(shell)
        return shell

    def unregister(self, shell: OpenShell) -> None:
        self._open.discard(shell)

    def close_for_key(self, api_key_id: str) -> None:
        for shell in [s for s in self._open if s.api_key_id == api_key_id]:
            shell.end(POLICY_VIOLATION, shell.revoked_reason)

    def close_for_user(self, user_id: str) -> None:
        for shell in [s for s in self._open if s.user_id == user_id]:
            shell.end(POLICY_VIOLATION, shell.revoked_reason)

    def close_for_sandbox(self, sandbox_id: str) -> None:
        for shell in [s for s in self._open if s.sandbox_id == sandbox_id]:
            shell.end(GOING_AWAY, "sandbox ended", grace=SANDBOX_END_GRACE_SECONDS)

    async def until_ended(self, shell: OpenShell) -> tuple[int, str]:
        """Wait until ``shell`` is ended from here or its credentials fail; the close to send."""
        interval = self.ctx.settings.shell_recheck_seconds
        while not shell.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shell.ended.wait(), timeout=interval)
                break
            try:
                valid = await shell.revalidate()
            except Exception:  # noqa: BLE001 - a failed check (database down) does not end the shell
                log.exception("could not re-check the credentials of a shell on %s", shell.sandbox_id)
                continue
            if not valid:
                shell.end(POLICY_VIOLATION, shell.revoked_reason)
        await asyncio.sleep(shell.end_grace)
        return shell.end_code, shell.end_reason
