from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from qbox.agent.processes import ProcessManager
from qbox.agent.runtime.base import ProcessSpec
from qbox.agent.runtime.fake import FakeRuntime
from qbox.core.errors import ProcessNotFoundError, ValidationError

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/user"}


def _spec(*argv: str) -> ProcessSpec:
    return ProcessSpec(args=list(argv), env=dict(ENV), cwd="/", uid=1000, gid=1000)


@pytest.fixture
async def manager(tmp_path: Path) -> ProcessManager:
    runtime = FakeRuntime()
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": str(tmp_path / "rootfs")}}))
    await runtime.run("sb_test0001", tmp_path)
    spool = tmp_path / "output"
    spool.mkdir()
    return ProcessManager(runtime, "sb_test0001", max_finished=3, output_cap_bytes=1024,
                          spool_dir=spool)


def _spools(manager: ProcessManager) -> int:
    """How many spool files ``manager`` has in its directory."""
    assert manager._spool_dir is not None
    return len(list(manager._spool_dir.iterdir()))


async def _finished(manager: ProcessManager, pid: int, timeout: float = 5) -> None:
    await asyncio.wait_for(manager.get(pid).finished.wait(), timeout)


async def test_exit_code_and_streams(manager: ProcessManager) -> None:
    result = await manager.run(_spec("sh", "-c", "echo out; echo err >&2; exit 3"))
    record = result.record
    assert (record.stdout.text(), record.stderr.text(), result.exit_code, result.timed_out) == (
        "out\n", "err\n", 3, False)


async def test_stdin_is_written_then_closed(manager: ProcessManager) -> None:
    result = await manager.run(_spec("cat"), stdin="hello\nworld")
    assert result.record.stdout.text() == "hello\nworld"


async def test_without_stdin_the_command_reads_eof(manager: ProcessManager) -> None:
    result = await manager.run(_spec("cat"), timeout=5)
    assert (result.record.stdout.text(), result.exit_code, result.timed_out) == ("", 0, False)


async def test_timeout_kills_and_reports(manager: ProcessManager) -> None:
    started = time.monotonic()
    result = await manager.run(_spec("sleep", "30"), timeout=0.3)
    assert time.monotonic() - started < 5
    assert result.timed_out and result.exit_code == 137 and result.signal == 9


async def test_exec_keeps_no_record(manager: ProcessManager) -> None:
    await manager.run(_spec("true"))
    assert manager.list() == []


async def test_background_command_status_logs_and_exit(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "echo started; exec sleep 30"))
    assert record.alive and manager.get(record.pid) is record
    assert [r.pid for r in manager.list()] == [record.pid]
    await asyncio.sleep(0.2)
    assert record.stdout.text() == "started\n"
    assert record.exit_code == 0 and record.signal == 0
    manager.kill(record.pid, signal.SIGTERM)
    await _finished(manager, record.pid)
    assert not record.alive
    assert (record.exit_code, record.signal) == (128 + 15, 15)
    assert record.ended_at is not None
    # An exited process stays queryable, and killing it again is fine.
    assert manager.get(record.pid).exit_code == 143
    manager.kill(record.pid, signal.SIGKILL)


async def test_fast_process_is_queryable_after_exit(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "echo quick; exit 7"))
    await _finished(manager, record.pid)
    assert manager.get(record.pid).exit_code == 7
    assert manager.get(record.pid).stdout.text() == "quick\n"


async def test_output_is_capped_with_a_marker(manager: ProcessManager) -> None:
    result = await manager.run(_spec("sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x"))
    assert result.record.stdout.text().startswith("x" * 1024)
    assert "output truncated" in result.record.stdout.text()
    assert result.exit_code == 0


async def test_unknown_pid_and_bad_signal(manager: ProcessManager) -> None:
    with pytest.raises(ProcessNotFoundError):
        manager.get(999999)
    record = await manager.start(_spec("true"))
    with pytest.raises(ValidationError):
        manager.kill(record.pid, 0)


async def test_finished_records_are_bounded(manager: ProcessManager) -> None:
    pids = []
    for _ in range(5):
        record = await manager.start(_spec("true"))
        await _finished(manager, record.pid)
        pids.append(record.pid)
    assert [r.pid for r in manager.list()] == pids[-3:]
    with pytest.raises(ProcessNotFoundError):
        manager.get(pids[0])


async def test_close_kills_running_commands(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sleep", "30"))
    await manager.close()
    assert record.handle is not None
    await asyncio.wait_for(record.finished.wait(), 5)


def test_killed_by_oom_needs_a_sigkill_and_a_new_oom_kill() -> None:
    from qbox.agent.processes import killed_by_oom
    from qbox.agent.runtime.base import ExitStatus
    assert killed_by_oom(ExitStatus.killed_by(9), 0, 1)
    assert killed_by_oom(ExitStatus(137), 2, 3)  # a shell reporting its killed child
    assert not killed_by_oom(ExitStatus.killed_by(9), 1, 1)  # someone else's SIGKILL
    assert not killed_by_oom(ExitStatus(1), 0, 1)
    assert not killed_by_oom(ExitStatus.killed_by(9), None, None)


async def test_a_command_killed_while_the_oom_counter_rose_is_flagged(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": str(tmp_path / "rootfs")}}))
    await runtime.run("sb_test0002", tmp_path)
    counter = [0]

    def oom_kills() -> int:
        return counter[0]

    manager = ProcessManager(runtime, "sb_test0002", oom_kills=oom_kills)
    record = await manager.start(_spec("sleep", "30"))
    counter[0] += 1  # the kernel's OOM killer strikes...
    record.handle.send_signal(signal.SIGKILL)  # ...with a SIGKILL
    await _finished(manager, record.pid)
    assert record.oom_killed is True
    result = await manager.run(_spec("sh", "-c", "exit 3"))
    assert result.oom_killed is False
    await manager.close()


# --- the output spool's life: a spool per stream, released when its record goes ---------

async def test_output_is_spooled_in_the_given_directory_and_released_on_eviction(
        manager: ProcessManager) -> None:
    records = []
    for _ in range(5):
        record = await manager.start(_spec("echo", "hi"))
        await _finished(manager, record.pid)
        records.append(record)
    # Three records kept (max_finished), two streams each; the evicted ones are gone.
    assert _spools(manager) == 6
    assert [r.stdout.released for r in records] == [True, True, False, False, False]
    assert records[-1].stdout.text() == "hi\n"
    await manager.close()
    assert _spools(manager) == 0


async def test_an_exec_keeps_its_spool_until_released(manager: ProcessManager) -> None:
    result = await manager.run(_spec("sh", "-c", "echo out; echo err >&2"))
    assert manager.list() == [] and _spools(manager) == 2
    assert result.record.stdout.text() == "out\n"
    result.release()
    assert _spools(manager) == 0 and result.record.stdout.text() == ""


async def test_an_exec_abandoned_by_its_caller_releases_its_spool(manager: ProcessManager) -> None:
    run = asyncio.ensure_future(manager.run(_spec("sh", "-c", "echo x; sleep 30")))
    while _spools(manager) < 2:
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _spools(manager) == 0
    await manager.close()


async def test_a_finished_exec_not_yet_sent_is_released_when_the_sandbox_ends(
        manager: ProcessManager) -> None:
    await manager.run(_spec("echo", "unsent"))
    assert _spools(manager) == 2
    await manager.close()
    assert _spools(manager) == 0



def test_an_agent_taking_a_sandbox_on_empties_its_spool_dir(tmp_path: Path) -> None:
    from qbox.agent.bundle import output_spool_dir
    spool = output_spool_dir(tmp_path)
    assert spool == tmp_path / "output" and spool.stat().st_mode & 0o777 == 0o700
    (spool / "out-left-by-a-dead-agent").write_bytes(b"x" * 1000)
    assert output_spool_dir(tmp_path) == spool and list(spool.iterdir()) == []
