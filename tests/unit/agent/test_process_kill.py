"""Killing a command kills its tree, and SIGKILLs what is left after the grace (fake runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qbox.agent.processes import ProcessManager, ProcessRecord
from qbox.agent.runtime.base import ProcessSpec
from qbox.agent.runtime.fake import FakeRuntime

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/user"}
GRACE = 0.3


def _spec(*argv: str) -> ProcessSpec:
    return ProcessSpec(args=list(argv), env=dict(ENV), cwd="/", uid=1000, gid=1000)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ProcessManager]:
    runtime = FakeRuntime()
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": str(tmp_path / "rootfs")}}))
    await runtime.run("sb_test0001", tmp_path)
    manager = ProcessManager(runtime, "sb_test0001", output_cap_bytes=64 * 1024,
                             kill_grace=GRACE)
    try:
        yield manager
    finally:
        await manager.close()
        await runtime.delete("sb_test0001")


async def _pids_printed(record: ProcessRecord, count: int) -> list[int]:
    """The pids a command printed (one a line), once it has printed ``count`` of them."""
    while len(lines := record.stdout.text().split()) < count:
        await asyncio.wait_for(record.stdout.wait_for_more(len(record.stdout)), 5)
    return [int(pid) for pid in lines[:count]]


class Exits:
    """Pidfds of host processes, readable once each has exited: waited on, not polled."""

    def __init__(self, pids: list[int]) -> None:
        self.fds = {pid: os.pidfd_open(pid) for pid in pids}

    async def all_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        waits = []
        for fd in self.fds.values():
            done: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, lambda f=done: f.done() or f.set_result(None))
            waits.append(done)
        try:
            await asyncio.wait_for(asyncio.gather(*waits), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            for fd in self.fds.values():
                loop.remove_reader(fd)

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)  # a failed test leaves nothing
            os.close(fd)


async def test_kill_reaches_background_children(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "sleep 1000 & echo $!; sleep 1000 & echo $!; wait"))
    exits = Exits(await _pids_printed(record, 2))
    try:
        manager.kill(record.pid, signal.SIGTERM)
        assert await exits.all_within(GRACE / 2 + 2)  # SIGTERM did it, no need for the grace
        await asyncio.wait_for(record.finished.wait(), 5)
        assert record.signal == signal.SIGTERM
    finally:
        exits.close()


async def test_what_ignores_the_signal_gets_sigkill_after_the_grace(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "trap '' TERM; sleep 1000 & echo $!; wait"))
    exits = Exits(await _pids_printed(record, 1))
    try:
        started = time.monotonic()
        manager.kill(record.pid, signal.SIGTERM)
        assert not await exits.all_within(GRACE / 3)
        assert await exits.all_within(5)
        assert time.monotonic() - started >= GRACE
        await asyncio.wait_for(record.finished.wait(), 5)
        assert record.signal == signal.SIGKILL
    finally:
        exits.close()


async def test_killing_an_exited_command_cleans_up_what_it_left(manager: ProcessManager) -> None:
    record = await manager.start(_spec("sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"))
    exits = Exits(await _pids_printed(record, 1))
    try:
        await asyncio.wait_for(record.finished.wait(), 5)
        assert record.exit_code == 0
        assert not await exits.all_within(0.05)  # its child outlived it
        manager.kill(record.pid, signal.SIGTERM)
        assert await exits.all_within(5)
    finally:
        exits.close()


async def test_an_exec_timeout_kills_the_tree(manager: ProcessManager) -> None:
    started: asyncio.Future[ProcessRecord] = asyncio.get_running_loop().create_future()
    original = manager.start

    async def start(*args: object, **kwargs: object) -> ProcessRecord:
        record = await original(*args, **kwargs)  # type: ignore[arg-type]
        started.set_result(record)
        return record

    manager.start = start  # type: ignore[method-assign]
    run = asyncio.ensure_future(manager.run(_spec("sh", "-c", "sleep 1000 & echo $!; wait"),
                                            timeout=0.5))
    exits = Exits(await _pids_printed(await started, 1))
    try:
        result = await asyncio.wait_for(run, 10)
        assert result.timed_out and result.signal == signal.SIGKILL
        assert await exits.all_within(5)
    finally:
        exits.close()


async def test_output_far_beyond_the_cap_stays_bounded_and_marked(manager: ProcessManager) -> None:
    # 64 MiB written against a 64 KiB cap: the pipe keeps draining, memory does not grow.
    record = await manager.start(_spec("sh", "-c", "head -c 67108864 /dev/zero | tr '\\0' x; echo end >&2"))
    await asyncio.wait_for(record.finished.wait(), 60)
    assert record.exit_code == 0
    assert record.stdout.bytes_kept == 64 * 1024
    text = record.stdout.text()
    assert text.startswith("x" * 1000)
    assert text.endswith("[qbox: output truncated: this stream exceeded 65536 bytes]\n")
    assert len(text) < 64 * 1024 + 100
    assert record.stderr.text() == "end\n"


async def test_closing_does_not_wait_out_a_grace_and_ends_followers(tmp_path: Path) -> None:
    from qbox.agent.processes import follow

    runtime = FakeRuntime()
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": str(tmp_path / "rootfs")}}))
    await runtime.run("sb_test0003", tmp_path)
    manager = ProcessManager(runtime, "sb_test0003", kill_grace=30)
    record = await manager.start(_spec("sh", "-c", "trap '' TERM; echo up; sleep 1000"))
    while record.stdout.text() != "up\n":
        await asyncio.wait_for(record.stdout.wait_for_more(len(record.stdout)), 5)
    events = follow(record, stdout_offset=3)  # past "up\n": waits for the end
    following = asyncio.ensure_future(anext(events))
    manager.kill(record.pid, signal.SIGTERM)  # ignored: its SIGKILL is 30 s away
    started = time.monotonic()
    await manager.close()  # the sandbox goes: no waiting for the grace
    assert time.monotonic() - started < 1.5
    assert (await asyncio.wait_for(following, 5)).type == "exit"
    await runtime.delete("sb_test0003")
