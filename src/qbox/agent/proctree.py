"""Which processes make up a command's tree, so that killing a command kills all of it.

A command's leader may fork children, which may outlive it. Under crun/runc
each command starts in a session of its own (the runtime process is started
with ``setsid``, and the command inherits that session): from inside the
sandbox ``getsid`` reads 0, since the session's leader is outside the
sandbox's PID namespace, but on the host ``/proc/<pid>/stat`` shows it. The
tree is therefore

- every process in the sandbox's PID namespace whose session is the
  command's (it finds orphans, which the sandbox's init has adopted), and
- every descendant of the leader, or of such a member, by ``PPid`` (it finds
  children that left the session with ``setsid``).

What escapes: a child that called ``setsid`` and whose parent then exited
(its session and parentage both lead elsewhere). Under gVisor (``runsc``)
only descendants by PPID are found, so orphans reparented to the sandbox's
init escape there too.

The decision is ``command_tree`` (pure); ``scan`` and ``signal_host`` are the
I/O around it. Every process is signalled through a pidfd opened *before*
its start time is checked again, so a pid reused since the scan is never hit.
"""

from __future__ import annotations

import os
import signal as signals
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    session: int
    # Clock ticks after boot: with the pid, it names one process for good.
    start_time: int
    # Its PID namespace (``pid:[inode]``), where the scan was asked to read it.
    namespace: str | None = field(default=None, compare=False)

    def same_process(self, other: ProcStat | None) -> bool:
        return other is not None and (other.pid, other.start_time) == (self.pid, self.start_time)


def parse_stat(pid: int, text: str) -> ProcStat | None:
    # The command name may contain spaces and ')': the fields follow the last ')'.
    fields = text.rpartition(")")[2].split()
    try:
        return ProcStat(pid, int(fields[1]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    try:
        return parse_stat(pid, (proc / str(pid) / "stat").read_text())
    except OSError:
        return None


def scan(session: int | None = None, proc: Path = PROC) -> list[ProcStat]:
    """Every process on the host (as far as /proc shows at this moment), with the
    namespace of the members of ``session``."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or (stat := read_stat(int(entry), proc)) is None:
            continue
        if session is not None and stat.session == session:
            stat = ProcStat(stat.pid, stat.ppid, stat.session, stat.start_time,
                            pid_namespace(stat.pid, proc))
        found.append(stat)
    return found


def descendants(parents: Mapping[int, int], roots: Iterable[int]) -> set[int]:
    """``roots`` and everything below them, given each pid's parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found.add(pid)
        pending.extend(children.get(pid, ()))
    return found


def command_tree(processes: Iterable[ProcStat], *, leader: ProcStat | None,
                 session: int | None, namespace: str | None) -> list[ProcStat]:
    """The processes of a command: its session's members in the sandbox's PID
    ``namespace``, and the descendants of those and of the leader. ``leader`` is
    None once it has been reaped (its pid may be someone else's by now);
    ``session`` None when the command has none of its own (or it is not known).

    The session's leader — the runtime process, outside the sandbox — is gone
    by the time a command runs. A live process whose pid is the session id
    means the number was handed out again, to a session that is not ours.
    """
    by_pid = {p.pid: p for p in processes}
    roots: set[int] = set()
    if leader is not None and leader.same_process(by_pid.get(leader.pid)):
        roots.add(leader.pid)
    if session is not None and namespace is not None and session not in by_pid:
        roots.update(p.pid for p in by_pid.values()
                     if p.session == session and p.namespace == namespace)
    tree = descendants({p.pid: p.ppid for p in by_pid.values()}, roots)
    return sorted((by_pid[pid] for pid in tree), key=lambda p: p.pid)


def pid_namespace(pid: int, proc: Path = PROC) -> str | None:
    """The PID namespace of a process (``pid:[inode]``); None for a zombie or a gone one."""
    try:
        return os.readlink(proc / str(pid) / "ns" / "pid")
    except OSError:
        return None


def signal_host(targets: Iterable[ProcStat], signo: int, proc: Path = PROC) -> int:
    """Signal each target that is still the same process; return how many were signalled."""
    sent = 0
    for target in targets:
        try:
            fd = os.pidfd_open(target.pid)
        except OSError:
            continue  # gone since the scan
        try:
            # Checked after the pidfd is open: if it is the same process now,
            # the pidfd is that process's, whatever happens to the pid later.
            if not target.same_process(read_stat(target.pid, proc)):
                continue
            signals.pidfd_send_signal(fd, signo)
            sent += 1
        except ProcessLookupError:
            continue
        finally:
            os.close(fd)
    return sent
