"""The code routes end to end over the fake runtime, with a fake kernel host in each sandbox."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from qbox.agent.interpreter.manager import HOST_ARGV
from tests.unit.agent.interpreter_fixtures import CodeAgent, make_code_agent_fixture, text_of

code_agent = make_code_agent_fixture()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def host_starts(agent: CodeAgent, sandbox_id: str) -> int:
    return sum(1 for cid, spec in agent.runtime.execs
               if cid == sandbox_id and spec.args[-1].endswith("fake_kernel_host.py"))


async def contexts(agent: CodeAgent, sandbox_id: str) -> list[dict[str, Any]]:
    r = await agent.client.get(f"/sandboxes/{sandbox_id}/code/contexts")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["contexts"]
    return found


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_languages_from_the_kernelspecs(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    r = await code_agent.client.get(f"/sandboxes/{sandbox_id}/code/languages")
    assert r.status_code == 200
    assert r.json() == {"languages": [
        {"language": "python", "aliases": ["python3", "py"], "kernelName": "python3",
         "isDefault": True},
        {"language": "bash", "aliases": ["sh", "shell"], "kernelName": "bash",
         "isDefault": False},
    ]}


async def test_the_host_runs_as_the_sandbox_user_in_its_home(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    await code_agent.events(sandbox_id, code="print hi")
    spec = next(s for cid, s in code_agent.runtime.execs if cid == sandbox_id)
    assert (spec.uid, spec.gid, spec.cwd) == (1000, 1000, "/home/user")
    assert HOST_ARGV == ("python3", "/.qbox/guest/kernel_host.py")


async def test_a_template_without_kernels_has_no_interpreter(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(code_agent.without_kernels)
    base = f"/sandboxes/{sandbox_id}/code"
    for r in [await code_agent.client.get(f"{base}/languages"),
              await code_agent.client.get(f"{base}/contexts"),
              await code_agent.client.post(f"{base}/contexts", json={"language": "python"}),
              await code_agent.execute(sandbox_id, code="print 1")]:
        assert r.status_code == 422 and r.json()["error"]["code"] == "code_interpreter_disabled"
    assert host_starts(code_agent, sandbox_id) == 0


async def test_execute_streams_code_events_in_order(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    events = await code_agent.events(
        sandbox_id, code="print one\neprint two\ndisplay pic\nprint three\nresult 42")
    context_id = events[0]["contextId"]
    assert context_id.startswith("ctx_")
    assert events[:-1] == [
        {"kind": "started", "contextId": context_id, "language": "python"},
        {"kind": "output", "output": {"stream": "stdout", "text": "one\n"}},
        {"kind": "output", "output": {"stream": "stderr", "text": "two\n"}},
        {"kind": "output", "output": {"display": {"text/plain": b64("pic")}}},
        {"kind": "output", "output": {"stream": "stdout", "text": "three\n"}},
        {"kind": "result", "result": {"text/plain": b64("42")}},
    ]
    assert events[-1]["kind"] == "complete" and events[-1]["timedOut"] is False
    assert isinstance(events[-1]["executionMs"], int)


async def test_a_code_error_is_an_event_not_an_http_error(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    events = await code_agent.events(sandbox_id, code="print a\nraise ValueError: bad")
    assert {"kind": "error", "error": {"name": "ValueError", "value": "bad",
                                       "traceback": ["Traceback: ValueError"]}} in events
    assert events[-1]["kind"] == "complete"


async def test_a_lazy_sandbox_starts_its_kernel_on_the_first_code_call(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()  # lazy: the default
    await asyncio.sleep(0.3)  # an eager sandbox's host would be on its way by now
    assert host_starts(code_agent, sandbox_id) == 0
    assert await contexts(code_agent, sandbox_id) == []  # listing starts nothing either
    events = await code_agent.events(sandbox_id, code="print x")
    assert text_of(events) == "x\n"
    [context] = await contexts(code_agent, sandbox_id)
    assert context["isDefault"] and context["state"] == "idle"
    assert host_starts(code_agent, sandbox_id) == 1


async def test_an_eager_sandbox_warms_its_default_context_up_at_boot(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(code_interpreter="eager")

    async def default_idle() -> bool:
        found = await contexts(code_agent, sandbox_id)
        return len(found) == 1 and found[0]["state"] == "idle"

    await until(default_idle)  # before any execution
    [context] = await contexts(code_agent, sandbox_id)
    assert context["isDefault"] and context["language"] == "python"
    assert context["kernelName"] == "python3" and context["cwd"] == "/home/user"
    assert context["createdAt"].endswith("Z") and context["lastUsedAt"] is None
    events = await code_agent.events(sandbox_id, code="print x", language="python")
    assert events[0]["contextId"] == context["id"]
    assert (await contexts(code_agent, sandbox_id))[0]["lastUsedAt"] is not None
    assert host_starts(code_agent, sandbox_id) == 1


async def test_aliases_pick_the_default_context_of_their_language(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    python = (await code_agent.events(sandbox_id, code="incr", language="py"))[0]["contextId"]
    again = await code_agent.events(sandbox_id, code="get", language="Python3")
    assert again[0]["contextId"] == python
    assert {"kind": "result", "result": {"text/plain": b64("1")}} in again
    bash = await code_agent.events(sandbox_id, code="get", language="sh")
    assert bash[0]["contextId"] != python and bash[0]["language"] == "bash"
    assert {"kind": "result", "result": {"text/plain": b64("0")}} in bash
    assert {c["language"] for c in await contexts(code_agent, sandbox_id)} == {"python", "bash"}


async def test_request_errors_before_the_stream(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    r = await code_agent.execute(sandbox_id, code="1", language="cobol")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "language_not_supported"
    assert r.json()["error"]["details"] == {"language": "cobol",
                                            "supportedLanguages": ["python", "bash"]}
    context_id = (await code_agent.events(sandbox_id, code="print 1"))[0]["contextId"]
    r = await code_agent.execute(sandbox_id, code="1", language="python", contextId=context_id)
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_argument"
    r = await code_agent.execute(sandbox_id, code="1", contextId="ctx_nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "context_not_found"
    r = await code_agent.execute(sandbox_id, code="1", env={"A=B": "x"})
    assert r.status_code == 400
    r = await code_agent.execute("sb_doesnotexist1", code="1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found"


async def test_contexts_have_their_own_kernels_and_cwd(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                     json={"language": "python", "cwd": "/tmp"})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["id"].startswith("ctx_") and created["isDefault"] is False
    assert created["cwd"] == "/tmp" and created["state"] == "idle"
    assert text_of(await code_agent.events(sandbox_id, code="cwd\nincr",
                                           contextId=created["id"])) == "/tmp"
    default = await code_agent.events(sandbox_id, code="get")
    assert {"kind": "result", "result": {"text/plain": b64("0")}} in default
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                     json={"language": "python", "cwd": "relative"})
    assert r.status_code == 400
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                     json={"language": "brainfuck"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "language_not_supported"


async def test_executions_on_one_context_run_in_order(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    context_id = (await code_agent.events(sandbox_id, code="print warm"))[0]["contextId"]
    first = asyncio.create_task(code_agent.events(
        sandbox_id, code="sleep 0.3\nincr\nprint first", contextId=context_id))

    async def busy() -> bool:
        return any(c["state"] == "busy" for c in await contexts(code_agent, sandbox_id))

    await until(busy)
    second = await code_agent.events(sandbox_id, code="get", contextId=context_id)
    assert first.done() and text_of(await first) == "first\n"
    assert {"kind": "result", "result": {"text/plain": b64("1")}} in second


async def test_executions_on_different_contexts_run_in_parallel(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    python = (await code_agent.events(sandbox_id, code="print 1"))[0]["contextId"]
    bash = (await code_agent.events(sandbox_id, code="print 1", language="bash"))[0]["contextId"]
    began = time.monotonic()
    results = await asyncio.gather(
        code_agent.events(sandbox_id, code="sleep 1\nprint a", contextId=python),
        code_agent.events(sandbox_id, code="sleep 1\nprint b", contextId=bash))
    assert time.monotonic() - began < 1.8
    assert [text_of(r) for r in results] == ["a\n", "b\n"]


async def test_env_and_timeout(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    assert text_of(await code_agent.events(sandbox_id, code="env FOO",
                                           env={"FOO": "bar"})) == "bar\n"
    events = await code_agent.events(sandbox_id, code="sleep 30", timeoutSeconds=0.2)
    assert events[-2]["kind"] == "error" and events[-2]["error"]["name"] == "KeyboardInterrupt"
    assert events[-1]["kind"] == "complete" and events[-1]["timedOut"] is True
    assert text_of(await code_agent.events(sandbox_id, code="print after")) == "after\n"


async def test_a_dead_kernel_is_refused_until_restarted(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                     json={"language": "python"})
    context_id = r.json()["id"]
    await code_agent.events(sandbox_id, code="incr", contextId=context_id)
    events = await code_agent.events(sandbox_id, code="die", contextId=context_id)
    assert events[-2]["error"]["name"] == "KernelDied" and events[-1]["kind"] == "complete"
    state = {c["id"]: c["state"] for c in await contexts(code_agent, sandbox_id)}
    assert state[context_id] == "dead"
    r = await code_agent.execute(sandbox_id, code="get", contextId=context_id)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert "restart" in r.json()["error"]["message"]
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts/{context_id}/restart")
    assert r.status_code == 200 and r.json()["id"] == context_id
    assert r.json()["state"] == "idle"
    events = await code_agent.events(sandbox_id, code="get", contextId=context_id)
    assert {"kind": "result", "result": {"text/plain": b64("0")}} in events


async def test_a_dead_default_context_comes_back_on_its_own(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    context_id = (await code_agent.events(sandbox_id, code="die"))[0]["contextId"]
    events = await code_agent.events(sandbox_id, code="print back")
    assert events[0]["contextId"] == context_id and text_of(events) == "back\n"


async def test_restart_forgets_state_and_keeps_the_id(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    context_id = (await code_agent.events(sandbox_id, code="incr\nincr"))[0]["contextId"]
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts/{context_id}/restart")
    assert r.status_code == 200 and r.json()["isDefault"] is True
    events = await code_agent.events(sandbox_id, code="get", contextId=context_id)
    assert {"kind": "result", "result": {"text/plain": b64("0")}} in events
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts/ctx_x/restart")
    assert r.status_code == 404 and r.json()["error"]["code"] == "context_not_found"


async def test_delete_a_context(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    default_id = (await code_agent.events(sandbox_id, code="incr"))[0]["contextId"]
    r = await code_agent.client.delete(f"/sandboxes/{sandbox_id}/code/contexts/{default_id}")
    assert r.status_code == 204
    assert await contexts(code_agent, sandbox_id) == []
    r = await code_agent.execute(sandbox_id, code="get", contextId=default_id)
    assert r.status_code == 404
    events = await code_agent.events(sandbox_id, code="get")  # a new default
    assert events[0]["contextId"] != default_id
    assert {"kind": "result", "result": {"text/plain": b64("0")}} in events
    r = await code_agent.client.delete(f"/sandboxes/{sandbox_id}/code/contexts/{default_id}")
    assert r.status_code == 404


async def test_the_host_dying_fails_the_execution_and_a_new_host_starts(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                     json={"language": "bash"})
    other = r.json()["id"]
    events = await code_agent.events(sandbox_id, code="print before\nsleep 0.1\nexit_host")
    assert text_of(events) == "before\n"
    error = events[-2]
    assert error["kind"] == "error" and error["error"]["name"] == "KernelHostDied"
    assert "fatal: the host gives up" in error["error"]["value"]
    assert events[-1]["kind"] == "complete"
    states = {c["id"]: c["state"] for c in await contexts(code_agent, sandbox_id)}
    assert set(states.values()) == {"dead"}
    # The default context comes back in a new host; the other one needs a restart.
    assert text_of(await code_agent.events(sandbox_id, code="print again")) == "again\n"
    assert host_starts(code_agent, sandbox_id) == 2
    r = await code_agent.execute(sandbox_id, code="print 1", contextId=other)
    assert r.status_code == 409
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts/{other}/restart")
    assert r.status_code == 200
    assert text_of(await code_agent.events(sandbox_id, code="print ok",
                                           contextId=other)) == "ok\n"


async def test_noise_from_the_host_is_ignored(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(envs={"FAKE_NOISE": "1"})
    assert text_of(await code_agent.events(sandbox_id, code="print fine")) == "fine\n"


async def test_large_output_lines_arrive_whole(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    events = await code_agent.events(sandbox_id, code="big 3000000")
    assert text_of(events) == "x" * 3_000_000


async def test_deleting_the_sandbox_stops_its_host(code_agent: CodeAgent, tmp_path: Any) -> None:
    log = tmp_path / "host.log"
    sandbox_id = await code_agent.create(envs={"FAKE_LOG": str(log)})
    await code_agent.events(sandbox_id, code="print 1")
    pid = int(log.read_text().split()[1])
    os.kill(pid, 0)  # alive
    r = await code_agent.client.delete(f"/sandboxes/{sandbox_id}")
    assert r.status_code == 204
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    r = await code_agent.execute(sandbox_id, code="print 1")
    assert r.status_code == 404
