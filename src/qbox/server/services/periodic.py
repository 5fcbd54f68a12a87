"""Background loops: every N seconds one tick, and each item of a tick on its own.

As jupyter_server's kernel culler does: one sandbox, host or build that
fails is logged and the tick goes on to the next; a tick that fails as a
whole (the database briefly locked) is logged and the loop waits for the
next one. Only cancelling a loop ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TypeVar

from qbox.core.errors import QboxError

log = logging.getLogger("qbox.periodic")

Item = TypeVar("Item", bound=Hashable)
Result = TypeVar("Result")


async def each(what: str, items: Iterable[Item],
               act: Callable[[Item], Awaitable[Result]]) -> dict[Item, Result]:
    """``act`` on every item in turn; the results of those that did not fail.

    A ``QboxError`` (a host that does not answer) is expected and logged in
    one line; anything else is logged with its traceback.
    """
    results: dict[Item, Result] = {}
    for item in items:
        try:
            results[item] = await act(item)
        except QboxError as exc:
            log.warning("%s %s: %s", what, item, exc.message)
        except Exception:  # noqa: BLE001 - one item must not stop the others
            log.exception("%s %s failed", what, item)
    return results


class Periodic:
    """A named loop: ``tick`` now (or after ``first_delay``), then every ``seconds``."""

    def __init__(self, name: str, seconds: float, tick: Callable[[], Awaitable[object]], *,
                 first_delay: float = 0.0, wake: asyncio.Event | None = None) -> None:
        self.name = name
        self.seconds = seconds
        self.tick = tick
        self.first_delay = first_delay
        # Set by whoever needs a tick before the next one is due (a warm pool's claim).
        self.wake = wake
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            if self.wake is not None:
                self.wake.clear()
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - e.g. the database briefly locked: try next tick
                log.exception("%s failed; next try in %s s", self.name, self.seconds)
            await self._pause()

    async def _pause(self) -> None:
        if self.wake is None:
            await asyncio.sleep(self.seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.seconds)
