from __future__ import annotations

import os
import select
import signal
import subprocess
from collections.abc import Iterator

import pytest

from qbox.agent import proctree
from qbox.agent.proctree import ProcStat, command_tree, descendants, parse_stat

NS = "pid:[4026532001]"
OTHER_NS = "pid:[4026532999]"
SESSION = 900


def proc(pid: int, ppid: int, session: int = 1, start: int = 10,
         namespace: str | None = None) -> ProcStat:
    return ProcStat(pid, ppid, session, start, namespace)


def pids(found: list[ProcStat]) -> list[int]:
    return [p.pid for p in found]


def test_parse_stat_with_spaces_and_parentheses_in_the_name() -> None:
    text = "4242 (my (odd) name) S 17 4200 4100 0 -1 4194560 " + " ".join(["0"] * 8) + \
        " 20 0 1 0 987654 1000 10"
    assert parse_stat(4242, text) == ProcStat(4242, 17, 4100, 987654)
    assert parse_stat(1, "garbage") is None


def test_session_members_in_the_sandbox_and_their_descendants() -> None:
    processes = [
        proc(100, 1, SESSION, namespace=NS),        # leader
        proc(101, 100, SESSION, namespace=NS),      # its child
        proc(102, 1, SESSION, namespace=NS),        # an orphan, adopted by the sandbox's init
        proc(103, 102, 555, namespace=None),        # the orphan's child, which left the session
        proc(104, 1, SESSION, namespace=OTHER_NS),  # same number in another sandbox: never
        proc(105, 1, 7, namespace=NS),              # another command
    ]
    found = command_tree(processes, leader=processes[0], session=SESSION, namespace=NS)
    assert pids(found) == [100, 101, 102, 103]


def test_a_child_that_left_the_session_is_found_through_the_leader() -> None:
    leader = proc(100, 1, SESSION)
    processes = [leader, proc(101, 100, 4000), proc(102, 101, 4000)]
    found = command_tree(processes, leader=leader, session=SESSION, namespace=NS)
    assert pids(found) == [100, 101, 102]


def test_a_reaped_leader_is_not_followed_even_if_its_pid_is_taken_again() -> None:
    old_leader = proc(100, 1, SESSION, start=10)
    processes = [proc(100, 1, 77, start=99), proc(101, 100, 77), proc(102, 1, SESSION, namespace=NS)]
    # Known reaped: only the session counts.
    assert pids(command_tree(processes, leader=None, session=SESSION, namespace=NS)) == [102]
    # Not known reaped, but the start time tells the pid is someone else's now.
    assert pids(command_tree(processes, leader=old_leader, session=SESSION, namespace=NS)) == [102]


def test_a_session_number_handed_out_again_matches_nothing() -> None:
    # A live process whose pid is the session id leads that session: not ours any more.
    processes = [proc(SESSION, 1, SESSION, namespace=NS), proc(901, SESSION, SESSION, namespace=NS)]
    assert command_tree(processes, leader=None, session=SESSION, namespace=NS) == []


def test_without_a_session_or_namespace_only_the_leaders_descendants_count() -> None:
    leader = proc(100, 1, SESSION, namespace=NS)
    processes = [leader, proc(101, 100, SESSION, namespace=NS), proc(102, 1, SESSION, namespace=NS)]
    assert pids(command_tree(processes, leader=leader, session=None, namespace=NS)) == [100, 101]
    assert pids(command_tree(processes, leader=leader, session=SESSION, namespace=None)) == [100, 101]


def test_descendants_survive_cycles_and_unknown_roots() -> None:
    assert descendants({2: 1, 3: 2, 1: 3}, [2]) == {1, 2, 3}
    assert descendants({2: 1}, [9]) == {9}


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _exits_within(pid_fd: int, seconds: float) -> bool:
    return bool(select.select([pid_fd], [], [], seconds)[0])


def test_scan_sees_a_real_session_with_its_namespace(sleeper: subprocess.Popen[bytes]) -> None:
    found = {p.pid: p for p in proctree.scan(session=sleeper.pid)}
    assert found[sleeper.pid].session == sleeper.pid
    assert found[sleeper.pid].namespace == os.readlink("/proc/self/ns/pid")
    assert found[os.getpid()].namespace is None  # only the session's members are looked up


def test_signal_host_hits_the_same_process_only(sleeper: subprocess.Popen[bytes]) -> None:
    stat = proctree.read_stat(sleeper.pid)
    assert stat is not None
    impostor = ProcStat(stat.pid, stat.ppid, stat.session, stat.start_time + 1)
    assert proctree.signal_host([impostor], signal.SIGKILL) == 0
    fd = os.pidfd_open(sleeper.pid)
    try:
        assert not _exits_within(fd, 0.05)
        assert proctree.signal_host([stat], signal.SIGKILL) == 1
        assert _exits_within(fd, 5)
    finally:
        os.close(fd)
    sleeper.wait()
    assert proctree.signal_host([stat], signal.SIGKILL) == 0  # gone: not an error
