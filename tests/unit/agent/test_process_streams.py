"""Following output, streamed exec, and stdin for background commands (fake runtime)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qbox.agent.output import OutputSpool
from qbox.agent.processes import ProcessManager, follow
from qbox.agent.runtime.base import ProcessSpec
from qbox.agent.runtime.fake import FakeRuntime
from qbox.core.errors import ConflictError, ProcessNotFoundError
from qbox.protocol.wire import Wire

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/user"}


def _spec(*argv: str) -> ProcessSpec:
    return ProcessSpec(args=list(argv), env=dict(ENV), cwd="/", uid=1000, gid=1000)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ProcessManager]:
    runtime = FakeRuntime()
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": str(tmp_path / "rootfs")}}))
    await runtime.run("sb_test0001", tmp_path)
    manager = ProcessManager(runtime, "sb_test0001", kill_grace=0.2)
    try:
        yield manager
    finally:
        await manager.close()
        await runtime.delete("sb_test0001")


async def _collect(events: AsyncIterator[Wire], timeout: float = 10) -> list[dict[str, Any]]:
    """The events as they go on the wire."""
    async def gather() -> list[dict[str, Any]]:
        return [event.wire() async for event in events]
    return await asyncio.wait_for(gather(), timeout)


def _joined(events: list[dict[str, Any]], stream: str) -> str:
    return "".join(e["data"] for e in events if e["type"] == stream)


async def test_buffer_followers_wake_on_new_text_and_on_close() -> None:
    buffer = OutputSpool()
    waiting = asyncio.ensure_future(buffer.wait_for_more(0))
    await asyncio.sleep(0)
    assert not waiting.done()
    buffer.feed(b"abc")
    await asyncio.wait_for(waiting, 1)
    assert buffer.text_from(1) == "bc" and buffer.text_from(3) == "" and buffer.text_from(9) == ""
    closing = asyncio.ensure_future(buffer.wait_for_more(3))
    await asyncio.sleep(0)
    assert not closing.done()
    buffer.close()
    await asyncio.wait_for(closing, 1)
    await asyncio.wait_for(buffer.wait_for_more(3), 1)  # closed: never waits again


async def test_follow_streams_output_as_it_comes_then_the_exit(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "echo one; read x; echo two >&2; exit 3"),
                                 keep_stdin=True)
    events = follow(record)
    first = (await asyncio.wait_for(events.__anext__(), 5)).wire()
    # "one" arrives while the command still waits for its stdin: it is streamed, not batched.
    assert first == {"type": "stdout", "data": "one\n"} and record.alive
    await manager.write_stdin(record.pid, "go\n")
    rest = await _collect(events)
    assert _joined(rest, "stderr") == "two\n"
    assert rest[-1] == {"type": "exit", "exitCode": 3, "signal": 0, "oomKilled": False}


async def test_follow_from_offsets_and_after_the_end(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "printf héllo; printf oops >&2"))
    await asyncio.wait_for(record.finished.wait(), 5)
    events = await _collect(follow(record, stdout_offset=2, stderr_offset=4))
    assert events == [{"type": "stdout", "data": "llo"},
                      {"type": "exit", "exitCode": 0, "signal": 0, "oomKilled": False}]


async def test_follow_ends_although_a_background_child_holds_the_pipe(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "sleep 1000 & echo started"))
    events = await _collect(follow(record))
    assert _joined(events, "stdout") == "started\n" and events[-1]["type"] == "exit"
    manager.kill(record.pid, signal.SIGKILL)  # the leftover sleep


async def test_exec_stream_events_and_timeout(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "echo hi; echo err >&2; exit 2"), ephemeral=True)
    events = await _collect(manager.stream(record))
    assert events[0] == {"type": "started", "pid": record.pid}
    assert (_joined(events, "stdout"), _joined(events, "stderr")) == ("hi\n", "err\n")
    assert events[-1] == {"type": "exit", "exitCode": 2, "signal": 0, "oomKilled": False,
                          "timedOut": False}
    record = await manager.start(_spec("sh", "-c", "echo slow; sleep 1000"), ephemeral=True)
    events = await _collect(manager.stream(record, timeout=0.3))
    assert _joined(events, "stdout") == "slow\n"
    assert events[-1]["timedOut"] is True and events[-1]["signal"] == signal.SIGKILL


async def test_a_stream_given_up_by_its_consumer_kills_the_command(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "echo x; sleep 1000"), ephemeral=True)
    events = manager.stream(record)
    assert (await events.__anext__()).type == "started"
    await events.aclose()
    await asyncio.wait_for(record.finished.wait(), 5)
    assert record.signal == signal.SIGKILL


async def test_stdin_round_trip_then_close(manager: ProcessManager) -> None:
    record = await manager.start(_spec("cat"), keep_stdin=True)
    await manager.write_stdin(record.pid, "hello\n")
    while "hello" not in record.stdout.text():
        await asyncio.wait_for(record.stdout.wait_for_more(len(record.stdout)), 5)
    await manager.write_stdin(record.pid, "bye", close=True)
    await asyncio.wait_for(record.finished.wait(), 5)
    assert (record.stdout.text(), record.exit_code) == ("hello\nbye", 0)
    with pytest.raises(ConflictError):
        await manager.write_stdin(record.pid, "late")


async def test_stdin_refused_without_a_pipe_or_for_unknown_pids(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sleep", "1000"))
    with pytest.raises(ConflictError) as caught:
        await manager.write_stdin(record.pid, "x")
    assert "without stdin" in caught.value.message
    with pytest.raises(ProcessNotFoundError):
        await manager.write_stdin(999999, "x")
    # Without a pipe, stdin is /dev/null: cat ends at once.
    result = await manager.run(_spec("cat"), timeout=5)
    assert (result.record.stdout.text(), result.exit_code, result.timed_out) == ("", 0, False)


async def test_closing_stdin_twice_is_a_conflict(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sleep", "1000"), keep_stdin=True)
    await manager.write_stdin(record.pid, "", close=True)
    with pytest.raises(ConflictError):
        await manager.write_stdin(record.pid, "", close=True)
    manager.kill(record.pid, signal.SIGKILL)
