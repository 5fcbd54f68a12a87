"""Processes the agent adopts from the runtime, watched and reaped through pidfds.

``crun exec --detach`` and ``crun run --detach`` return as soon as the process
runs, and crun exits. With the agent marked a *child subreaper*
(PR_SET_CHILD_SUBREAPER) the kernel hands crun's orphans — the command, or the
sandbox's init — to the agent instead of the host's PID 1. That gives us what
a foreground ``crun exec`` cannot:

- the real wait status (killed by SIGKILL vs. ``exit 137``);
- no race reading the command's pid inside the sandbox: the process stays a
  zombie until *we* reap it, so ``/proc/<pid>/status`` is there to read even
  for a ``true`` that exited in a millisecond;
- no crun process parked per running command.

Each adopted process is watched through a pidfd on the event loop (readable
when it exits) and reaped with ``waitid(P_PIDFD)`` — never ``waitpid(-1)``,
which would steal asyncio's own children.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal as signals
import time
from collections import Counter

from qbox.agent.runtime.base import ExitStatus

_PR_SET_CHILD_SUBREAPER = 36
_CLD_KILLED = 2
_CLD_DUMPED = 3


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def namespace_pid(host_pid: int) -> int:
    """The pid as seen in the process's own (innermost) PID namespace."""
    with open(f"/proc/{host_pid}/status") as handle:
        for line in handle:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise ProcessLookupError(host_pid)


class AdoptedChild:
    """A process known by pid, watched through a pidfd.

    If it is our child (the usual case) ``wait`` returns its exit status and
    reaps it; if it is not (a sandbox init started by an earlier agent) ``wait``
    still returns when it exits, with None.
    """

    # Pids watched by some instance (with a count: a restarted app in the same
    # process may watch an init twice): the orphan sweep leaves them alone.
    watched: Counter[int] = Counter()

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.pid = pid
        self._loop = loop or asyncio.get_running_loop()
        self._fd: int | None = os.pidfd_open(pid)
        AdoptedChild.watched[pid] += 1
        self._done: asyncio.Future[ExitStatus | None] = self._loop.create_future()
        self._loop.add_reader(self._fd, self._on_readable)
        # The process may be a zombie already: the reader fires at once then.

    def _on_readable(self) -> None:
        if self._fd is None or self._done.done():
            return
        try:
            result = os.waitid(os.P_PIDFD, self._fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            result = None  # not our child: it exited, its status went elsewhere
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            return
        else:
            if result is None:  # readable but not yet waitable: spurious wakeup
                return
        status: ExitStatus | None = None
        if result is not None:
            if result.si_code in (_CLD_KILLED, _CLD_DUMPED):
                status = ExitStatus.killed_by(result.si_status)
            else:
                status = ExitStatus(result.si_status)
        self._close_fd()
        self._done.set_result(status)

    async def wait(self) -> ExitStatus | None:
        return await asyncio.shield(self._done)

    @property
    def exited(self) -> bool:
        """It has exited (or is no longer watched)."""
        return self._done.done()

    def send_signal(self, signo: int) -> None:
        if self._fd is None:
            return
        try:
            signals.pidfd_send_signal(self._fd, signo)
        except ProcessLookupError:
            pass  # exited (a zombie not reaped yet): nothing to signal

    def _close_fd(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
            AdoptedChild.watched[self.pid] -= 1
            if AdoptedChild.watched[self.pid] <= 0:
                del AdoptedChild.watched[self.pid]

    def close(self) -> None:
        """Stop watching (the process, if still running, is left alone)."""
        self._close_fd()
        if not self._done.done():
            self._done.set_result(None)


def _children_of(pid: int) -> set[int]:
    """Child pids of ``pid`` (all its threads), via /proc/<pid>/task/*/children."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.update(int(p) for p in handle.read().split())
        except (OSError, ValueError):
            continue
    return found


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # The command name may contain spaces and ')': split after the last one.
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return []


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == "Z"


def stale_zombies(first_seen: dict[int, float], current: set[int], now: float,
                  settle: float) -> set[int]:
    """Zombies that have stayed zombies for ``settle`` seconds: nobody is going to reap them.

    Time, not a count of sweeps: two sweeps can run back to back, and a
    command the runtime has just started is an unwatched zombie for the few
    milliseconds until its driver adopts it.
    """
    return {pid for pid in current if now - first_seen.get(pid, now) >= settle}


class OrphanReaper:
    """Reaps zombies that became the agent's children without anyone waiting for them.

    Being a subreaper, the agent inherits every orphan below it: the helper
    ``crun run --detach`` forks (it outlives crun), or a daemon double-forked
    by an image tool. asyncio reaps its own children at once and
    ``AdoptedChild`` reaps the ones it watches, so a zombie that is still
    there ``settle`` seconds after it was first seen belongs to nobody. It is
    reaped by pid, never with ``waitpid(-1)``, which would steal asyncio's
    children.

    Sweeps run every ``interval`` seconds, and soon after a ``poke`` (the
    driver pokes after each ``crun run``).
    """

    def __init__(self, interval: float = 30.0, settle: float = 2.0) -> None:
        self.interval = interval
        self.settle = settle
        self._task: asyncio.Task[None] | None = None
        self._poked: asyncio.Event | None = None
        self._first_seen: dict[int, float] = {}

    def sweep(self, now: float | None = None, settle: float | None = None) -> set[int]:
        now = time.monotonic() if now is None else now
        current = {pid for pid in _children_of(os.getpid()) - AdoptedChild.watched.keys()
                   if _is_zombie(pid)}
        reaped = set()
        wait = self.settle if settle is None else settle
        for pid in stale_zombies(self._first_seen, current, now, wait):
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped.add(pid)
            except ChildProcessError:
                pass
        self._first_seen = {pid: self._first_seen.get(pid, now) for pid in current - reaped}
        return reaped

    @property
    def pending(self) -> int:
        """Zombies seen but not reaped yet."""
        return len(self._first_seen)

    def _safe_sweep(self) -> None:
        try:
            self.sweep()
        except Exception:  # noqa: BLE001 - keep sweeping next time
            logging.getLogger("qbox.agent.runtime").exception("orphan sweep failed")

    async def _run(self, poked: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poked.wait(), self.interval)
            poked.clear()
            self._safe_sweep()
            if self._first_seen:
                # Come back once what was just seen has had time to settle.
                await asyncio.sleep(self.settle)
                self._safe_sweep()

    def poke(self) -> None:
        """Something may have left an orphan: sweep soon (starts the sweeper if needed)."""
        if self._task is None or self._task.done():
            self._poked = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._poked))
        assert self._poked is not None
        self._poked.set()

    async def stop(self) -> None:
        """Stop sweeping, after reaping what is there now (tests start and stop agents often)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        # At shutdown nothing of ours is in flight: what is a zombie now stays one.
        self.sweep(settle=0.0)
