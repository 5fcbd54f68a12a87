"""A plain /exec whose caller goes away kills the command's tree (issue 13, finding 4),
and one that ends first answers from its spool, then frees it (finding 7).

Driven through the agent's real ASGI app with a receive channel the test
controls: the request's body, then — when the test says — ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


from tests.unit.agent.conftest import SECRET, AgentUnderTest
from tests.unit.agent.test_app import _create


def _scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"agent"), (b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {SECRET}".encode())],
            "client": ("127.0.0.1", 1), "server": ("agent", 80), "state": {}}


async def _request(app: Any, path: str, body: dict[str, Any],
                   gone: asyncio.Event) -> list[dict[str, Any]]:
    """The messages the app sends; its client disconnects once ``gone`` is set."""
    pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope(path), receive, send)
    return sent


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _until(predicate: Any, timeout: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_plain_exec_whose_caller_goes_away_kills_its_tree(
        agent: AgentUnderTest, tmp_path: Path) -> None:
    sandbox_id = await _create(agent)
    pids = tmp_path / "pids"
    script = f"sleep 1000 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait"
    gone = asyncio.Event()
    call = asyncio.ensure_future(_request(agent.app, f"/internal/v1/sandboxes/{sandbox_id}/exec",
                                          {"cmd": "sh", "args": ["-c", script]}, gone))
    assert await _until(pids.exists)
    running = [int(line) for line in pids.read_text().split()]
    assert all(_alive(pid) for pid in running)
    gone.set()
    sent = await asyncio.wait_for(call, 10)
    assert sent[0]["status"] == 499  # nobody reads it
    assert await _until(lambda: not any(_alive(pid) for pid in running)), \
        "the command outlived its caller"


async def test_an_exec_that_ends_first_answers_and_frees_its_spool(
        agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    sent = await _request(agent.app, f"/internal/v1/sandboxes/{sandbox_id}/exec",
                          {"cmd": "sh", "args": ["-c", "echo out; echo err >&2; exit 2"]},
                          asyncio.Event())
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert json.loads(body) == {"stdout": "out\n", "stderr": "err\n", "exitCode": 2,
                                "timedOut": False}
    spool = agent.settings.sandboxes_dir / sandbox_id / "output"
    assert spool.is_dir() and list(spool.iterdir()) == []

