"""Commands under pressure, end to end against a real `qbox up` (crun): whole-tree kill,
NDJSON follow and exec streams relayed through the control plane, offsets, stdin — and
our SDK and CLI on top of them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qbox import AsyncSandbox, CommandOutput, Sandbox
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration

NDJSON = "application/x-ndjson"


def _start(api: httpx.Client, sb: dict, script: str, **extra: object) -> int:  # type: ignore[type-arg]
    r = api.post(f"/v1/sandboxes/{sb['id']}/commands", json={"cmd": "sh", "args": ["-c", script], **extra})
    assert r.status_code == 201, r.text
    return int(r.json()["pid"])


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line:
            yield json.loads(line)


def _until(predicate, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_follow_streams_output_while_the_command_runs(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}/commands"
    pid = _start(api, sandbox, 'echo first; read line; echo "got $line" >&2; exit 7', stdin=True)
    with api.stream("GET", f"{base}/{pid}/logs", params={"follow": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(NDJSON)
        events = _events(response.iter_lines())
        # Here while the command still waits for its stdin: streamed, not at the end.
        assert next(events) == {"type": "stdout", "data": "first\n"}
        assert api.get(f"{base}/{pid}").json()["alive"] is True
        r = api.post(f"{base}/{pid}/stdin", json={"data": "x\n", "close": True})
        assert r.status_code == 204
        rest = list(events)
    assert {"type": "stderr", "data": "got x\n"} in rest
    assert rest[-1] == {"type": "exit", "exitCode": 7, "signal": 0, "oomKilled": False}
    # From offsets, after the end: what is left, then the exit, at once.
    r = api.get(f"{base}/{pid}/logs", params={"follow": "true", "stdoutOffset": 6, "stderrOffset": 4})
    assert list(_events(r.iter_lines())) == [{"type": "stderr", "data": "x\n"}, rest[-1]]
    r = api.get(f"{base}/{pid}/logs", params={"offset": 2})
    assert r.json() == {"stdout": "rst\n", "stderr": "t x\n", "stdoutNext": 6, "stderrNext": 6}
    assert api.get(f"{base}/{pid}/logs").json() == {"stdout": "first\n", "stderr": "got x\n"}
    r = api.get(f"{base}/424242/logs", params={"follow": "true"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "process_not_found"


def test_exec_as_ndjson(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    url = f"/v1/sandboxes/{sandbox['id']}/exec"
    body = {"cmd": "sh", "args": ["-c", "echo a; sleep 0.2; echo b >&2; exit 3"]}
    with api.stream("POST", url, json=body, headers={"Accept": NDJSON}) as response:
        assert response.headers["content-type"].startswith(NDJSON)
        events = list(_events(response.iter_lines()))
    assert events[0]["type"] == "started" and events[0]["pid"] > 1
    assert {"type": "stdout", "data": "a\n"} in events and {"type": "stderr", "data": "b\n"} in events
    assert events[-1] == {"type": "exit", "exitCode": 3, "signal": 0, "oomKilled": False,
                          "timedOut": False}
    started = time.monotonic()
    r = api.post(url, json={"cmd": "sh", "args": ["-c", "sleep 1000 & echo waiting; wait"],
                            "timeoutSeconds": 1}, headers={"Accept": NDJSON})
    events = list(_events(r.iter_lines()))
    assert events[-1]["timedOut"] is True and events[-1]["signal"] == 9
    assert time.monotonic() - started < 10
    assert api.post(url, json=body).json()["exitCode"] == 3  # without the header: as before


def test_delete_kills_the_whole_tree(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}/commands"

    def sleeps() -> int:
        r = api.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": "ps", "args": ["-e", "-o", "comm="]})
        return int(r.json()["stdout"].split().count("sleep"))

    pid = _start(api, sandbox, "sleep 1000 & sleep 1000 & wait")
    assert _until(lambda: sleeps() == 2)
    assert api.delete(f"{base}/{pid}", params={"signal": 15}).status_code == 204
    assert _until(lambda: not api.get(f"{base}/{pid}").json()["alive"])
    assert _until(lambda: sleeps() == 0)
    # A background child that outlived its command is cleaned up by the DELETE too.
    pid = _start(api, sandbox, "sleep 1000 >/dev/null 2>&1 &")
    assert _until(lambda: not api.get(f"{base}/{pid}").json()["alive"])
    assert sleeps() == 1
    assert api.delete(f"{base}/{pid}", params={"signal": 15}).status_code == 204
    assert _until(lambda: sleeps() == 0)


def test_stdin_needs_the_flag(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}/commands"
    pid = _start(api, sandbox, "exec cat")
    r = api.post(f"{base}/{pid}/stdin", json={"data": "x"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert _until(lambda: not api.get(f"{base}/{pid}").json()["alive"])  # /dev/null: EOF at once


def test_sdk_streams_iteration_callbacks_and_stdin(qbox: QboxUp) -> None:
    with Sandbox.create("tpl_python", timeout=120, api_key=qbox.api_key, base_url=qbox.base_url) as sb:
        handle = sb.commands.run("cat; echo closed >&2", background=True, stdin=True)
        handle.send_stdin("ping\n")
        chunks = iter(handle)
        assert next(chunks) == CommandOutput("stdout", "ping\n")  # echoed back while running
        handle.close_stdin()
        assert list(chunks) == [CommandOutput("stderr", "closed\n")]
        assert handle.wait().exit_code == 0
        seen: list[str] = []
        result = sb.commands.run("for i in 1 2 3; do echo $i; done; exit 2", on_stdout=seen.append,
                                 raise_on_error=False)
        assert ("".join(seen), result.stdout, result.exit_code) == ("1\n2\n3\n", "1\n2\n3\n", 2)
        handle = sb.commands.run("sleep 1000 & sleep 1000 & wait", background=True)
        assert handle.kill() is True
        assert handle.wait(raise_on_error=False).exit_code == 143
        assert _until(lambda: "sleep" not in sb.commands.run("ps -e -o comm=").stdout.split())


def test_async_sdk_follows_too(qbox: QboxUp) -> None:
    async def scenario() -> list[CommandOutput]:
        async with await AsyncSandbox.create("tpl_python", timeout=120, api_key=qbox.api_key,
                                             base_url=qbox.base_url) as sb:
            handle = await sb.commands.run("read x; echo $x", background=True, stdin=True)
            await handle.send_stdin("async\n")
            return [chunk async for chunk in handle]

    assert asyncio.run(scenario()) == [CommandOutput("stdout", "async\n")]
