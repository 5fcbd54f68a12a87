"""Per-user counts of running commands and open shells, for their quotas.

Counted by each control-plane replica for the requests it serves (with
several replicas a user may hold up to the quota on each). A command's slot
is taken before it reaches the agent and given back when the call ends; a
background command (``POST /commands``) keeps its slot while it runs. The
control plane is not told when a background command exits, so those are
checked with their agent only when a user reaches the quota: the common case
costs nothing, and a user at the quota gets an exact answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from qbox.core.errors import QuotaExceededError

# Given a sandbox and pids started in it, those still running.
StillRunning = Callable[[str, frozenset[int]], Awaitable[frozenset[int]]]


def exceeded(quota: str, limit: int, used: int, requested: int = 1) -> QuotaExceededError:
    return QuotaExceededError(
        f"quota exceeded: {quota} limit is {limit}, {used} in use, {requested} more requested",
        details={"quota": quota, "limit": limit, "used": used, "requested": requested})


class Slot:
    """One unit of a user's quota, held until released (also as a context manager)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    @property
    def held(self) -> bool:
        return self._release is not None

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def pass_on(self) -> Slot:
        """A new holder of this slot (e.g. a response stream); this one no longer releases it."""
        release, self._release = self._release, None
        return Slot(release) if release is not None else Slot(lambda: None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


class ShellSlots:
    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def used(self, user_id: str) -> int:
        return self._open[user_id]

    def take(self, user_id: str, limit: int | None) -> Slot:
        used = self._open[user_id]
        if limit is not None and used >= limit:
            raise exceeded("shells", limit, used)
        self._open[user_id] += 1
        return Slot(lambda: self._give_back(user_id))

    def _give_back(self, user_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]


class CommandSlot(Slot):
    def __init__(self, slots: CommandSlots, user_id: str) -> None:
        super().__init__(lambda: slots._give_back(user_id))
        self._slots = slots
        self._user_id = user_id

    def keep_while_running(self, sandbox_id: str, pid: int) -> None:
        """The command started in the background: it holds the slot until it exits."""
        if self.held:
            self._slots._track(self._user_id, sandbox_id, pid)
        self.release()


class CommandSlots:
    def __init__(self, still_running: StillRunning) -> None:
        self._still_running = still_running
        # Execs in flight and commands being started, by user.
        self._calls: Counter[str] = Counter()
        # Background commands believed running: user -> sandbox -> pids.
        self._background: dict[str, dict[str, set[int]]] = {}

    def used(self, user_id: str) -> int:
        background = self._background.get(user_id, {})
        return self._calls[user_id] + sum(len(pids) for pids in background.values())

    async def take(self, user_id: str, limit: int | None) -> CommandSlot:
        if limit is not None and self.used(user_id) >= limit:
            await self.refresh(user_id)
            # Checked again after the await, and taken without one: never over the limit.
            used = self.used(user_id)
            if used >= limit:
                raise exceeded("commands", limit, used)
        self._calls[user_id] += 1
        return CommandSlot(self, user_id)

    async def refresh(self, user_id: str) -> None:
        """Forget the user's background commands that are no longer running."""
        for sandbox_id, pids in list(self._background.get(user_id, {}).items()):
            asked = frozenset(pids)
            alive = await self._still_running(sandbox_id, asked)
            # Only what was asked about: pids started during the await stay.
            current = self._background.get(user_id, {}).get(sandbox_id)
            if current is not None:
                current.difference_update(asked - alive)
                if not current:
                    del self._background[user_id][sandbox_id]
        if not self._background.get(user_id, True):
            del self._background[user_id]

    def _track(self, user_id: str, sandbox_id: str, pid: int) -> None:
        self._background.setdefault(user_id, {}).setdefault(sandbox_id, set()).add(pid)

    def _give_back(self, user_id: str) -> None:
        self._calls[user_id] -= 1
        if self._calls[user_id] <= 0:
            del self._calls[user_id]
