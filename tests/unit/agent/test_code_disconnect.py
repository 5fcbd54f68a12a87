"""A code-execute whose caller goes away interrupts its cell (issue 13, finding 4).

Driven through the agent's real ASGI app (fake kernel host in the sandbox) with
a receive channel the test controls: the request's body, then — when the test
says — ``http.disconnect``. The cell sleeps 30 s before ``incr``; once its
caller is gone the next execution in the same context must run at once and
see the counter untouched (the cell was interrupted, the context kept).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from tests.unit.agent.conftest import SECRET
from tests.unit.agent.interpreter_fixtures import CodeAgent, make_code_agent_fixture
from tests.unit.agent.test_interpreter_routes import until

code_agent = make_code_agent_fixture()
LONG_CELL = "print a\nsleep 30\nincr\nprint b"


def _scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"agent"), (b"content-type", b"application/json"),
                        (b"accept", b"application/x-ndjson"),
                        (b"authorization", f"Bearer {SECRET}".encode())],
            "client": ("127.0.0.1", 1), "server": ("agent", 80), "state": {}}


async def _execute(agent: CodeAgent, sandbox_id: str, body: dict[str, Any],
                   gone: asyncio.Event, sent: list[dict[str, Any]]) -> None:
    """One code-execute whose client disconnects once ``gone`` is set."""
    pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = f"/internal/v1/sandboxes/{sandbox_id}/code/execute"
    await agent.app(_scope(path), receive, send)


def _lines(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return [json.loads(line) for line in body.splitlines()]


async def _counter_after(agent: CodeAgent, sandbox_id: str, context_id: str) -> int:
    """The context's counter, read by the next execution; a cell still running would hold
    it back for its 30 s."""
    r = await asyncio.wait_for(agent.execute(sandbox_id, code="get", contextId=context_id), 10)
    assert r.status_code == 200, r.text
    [result] = [json.loads(line) for line in r.content.splitlines()
                if json.loads(line)["kind"] == "result"]
    return int(base64.b64decode(result["result"]["text/plain"]))


async def test_a_caller_leaving_mid_cell_interrupts_it(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    code = code_agent.manager.code(sandbox_id)
    context = await code.context_for(None, None)
    gone, sent = asyncio.Event(), []
    call = asyncio.ensure_future(_execute(code_agent, sandbox_id,
                                          {"code": LONG_CELL, "contextId": context.id}, gone, sent))

    async def printed() -> bool:
        return any(e.get("output", {}).get("text") == "a\n" for e in _lines(sent))
    await until(printed)
    gone.set()
    await asyncio.wait_for(call, 10)
    assert await _counter_after(code_agent, sandbox_id, context.id) == 0
    assert context.dead_reason is None and context.running == 0
    assert context.host is not None and context.host.pending_count == 0


async def test_a_caller_leaving_before_the_first_line_interrupts_it(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    code = code_agent.manager.code(sandbox_id)
    context = await code.context_for(None, None)
    gone, sent = asyncio.Event(), []
    gone.set()  # the disconnect is there as soon as the body has been read
    await asyncio.wait_for(_execute(code_agent, sandbox_id,
                                    {"code": LONG_CELL, "contextId": context.id}, gone, sent), 10)
    assert await _counter_after(code_agent, sandbox_id, context.id) == 0
    assert context.dead_reason is None and context.running == 0
