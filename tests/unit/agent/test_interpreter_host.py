"""``KernelHost`` over in-memory pipes: routing by id, untrusted lines, detached readers,
the host's end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from qbox.agent.interpreter.host import HostGone, HostRequestFailed, KernelHost
from qbox.agent.runtime.base import ExitStatus


class _Writer:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.lines.append(json.loads(data))

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _Handle:
    """A kernel host process the test speaks for."""

    pid = 1

    def __init__(self) -> None:
        self.stdin = _Writer()
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self.killed = False

    def say(self, *messages: dict[str, Any] | bytes) -> None:
        for message in messages:
            self.stdout.feed_data(message if isinstance(message, bytes)
                                  else json.dumps(message).encode() + b"\n")

    def exit(self, stderr: bytes = b"") -> None:
        self.stderr.feed_data(stderr)
        self.stderr.feed_eof()
        self.stdout.feed_eof()

    async def wait(self) -> ExitStatus:
        return ExitStatus(1)

    def send_signal(self, signo: int) -> None:
        pass

    async def signal_tree(self, signo: int) -> int:
        self.killed = True
        return 1


async def _host() -> tuple[KernelHost, _Handle]:
    handle = _Handle()
    host = KernelHost(handle)  # type: ignore[arg-type]
    handle.say(b"garbage\n", b"[1]\n", {"event": "ready", "kernels": [{"name": "k"}]})
    assert await host.ready == [{"name": "k"}]
    return host, handle


async def _answered(host: KernelHost, handle: _Handle) -> None:
    """Returns once every line fed before it has been read (lines are read in order)."""
    sent = len(handle.stdin.lines)
    task = asyncio.create_task(host.request("state"))
    while len(handle.stdin.lines) == sent:
        await asyncio.sleep(0)  # the request is written before its first real await
    handle.say({"id": handle.stdin.lines[-1]["id"], "event": "ok", "contexts": []})
    await task


async def test_answers_go_to_their_request_by_id() -> None:
    host, handle = await _host()
    first = asyncio.create_task(host.request("start", context="a", kernel="k", cwd="/"))
    second = asyncio.create_task(host.request("stop", context="b"))
    while len(handle.stdin.lines) < 2:
        await asyncio.sleep(0)
    ids = {line["op"]: line["id"] for line in handle.stdin.lines}
    assert handle.stdin.lines[0] == {"id": ids["start"], "op": "start", "context": "a",
                                     "kernel": "k", "cwd": "/"}
    handle.say({"id": 999, "event": "ok"},  # nobody's: ignored
               {"id": ids["stop"], "event": "fail", "code": "context_not_found",
                "message": "no b"},
               {"id": ids["start"], "event": "ok", "context": "a"})
    assert (await first)["context"] == "a"
    with pytest.raises(HostRequestFailed) as info:
        await second
    assert info.value.code == "context_not_found"
    assert host.pending_count == 0


async def test_a_reader_that_left_gets_nothing_but_the_end_is_still_seen() -> None:
    host, handle = await _host()
    finals: list[Any] = []
    events = (await host.stream("execute", on_final=finals.append, context="a",
                                code="x")).__aiter__()
    request_id = handle.stdin.lines[-1]["id"]
    handle.say({"id": request_id, "event": "stream", "text": "1"})
    assert (await anext(events))["text"] == "1"
    await events.aclose()  # the client went away
    assert handle.stdin.lines[-1] == {"id": request_id + 1, "op": "cancel", "request": request_id}
    handle.say(*[{"id": request_id, "event": "stream", "text": "x" * 1000}] * 100)
    await _answered(host, handle)
    assert host.queued_count == 0 and host.pending_count == 1
    handle.say({"id": request_id, "event": "done", "executionMs": 3, "timedOut": False,
                "kernelDied": False})
    await _answered(host, handle)
    assert [f["event"] for f in finals] == ["done"] and host.pending_count == 0


async def test_a_stream_never_read_is_cancelled_once_and_a_finished_one_never() -> None:
    host, handle = await _host()
    unread = await host.stream("execute", context="a", code="x")
    request_id = handle.stdin.lines[-1]["id"]
    unread.cancel()  # its response was cancelled before the first line
    unread.cancel()
    await unread.aclose()
    assert [line for line in handle.stdin.lines if line["op"] == "cancel"] == [
        {"id": request_id + 1, "op": "cancel", "request": request_id}]
    done = {"event": "done", "executionMs": 1, "timedOut": False, "kernelDied": False}
    finished = await host.stream("execute", context="a", code="y")
    finished_id = handle.stdin.lines[-1]["id"]
    handle.say({"id": finished_id, **done})
    assert [m async for m in finished] == [{"id": finished_id, **done}]
    finished.cancel()
    assert handle.stdin.lines[-1]["id"] == finished_id  # nothing more was sent
    assert host.cancel(finished_id) is False


async def test_the_hosts_end_fails_what_is_pending_with_its_last_words() -> None:
    host, handle = await _host()
    finals: list[Any] = []
    events = await host.stream("execute", on_final=finals.append, context="a", code="x")
    waiting = asyncio.create_task(host.request("start", context="b", kernel="k", cwd="/"))
    while len(handle.stdin.lines) < 2:
        await asyncio.sleep(0)
    handle.exit(b"Traceback ...\nMemoryError\n")
    with pytest.raises(HostGone, match="MemoryError"):
        await waiting
    [gone] = [message async for message in events]
    assert isinstance(gone, HostGone) and finals == [gone]
    await host.exited.wait()
    assert not host.alive
    with pytest.raises(HostGone):
        await host.request("state")  # nothing is sent to a host that is gone
    await host.close(grace=0.1)
    assert handle.stdin.closed and handle.killed
