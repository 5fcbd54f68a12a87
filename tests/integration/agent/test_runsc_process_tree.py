"""Killing a command under gVisor: its descendants by PPID, as ``runsc ps`` lists them."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.integration.agent.conftest import Agent


@pytest.fixture(autouse=True)
def _runsc_installed() -> None:
    assert shutil.which("runsc") is not None, "runsc is not installed (run make setup)"


async def _ps(agent: Agent, sandbox: str) -> list[str]:
    ps = await agent.exec(sandbox, "ps", "-e", "-o", "comm=")
    return ps["stdout"].split()  # type: ignore[no-any-return]


async def test_delete_kills_the_descendants_under_gvisor(agent: Agent) -> None:
    sandbox = await agent.create(runtime="runsc")
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands", json={
        "cmd": "sh", "args": ["-c", "sleep 1000 & sleep 1000 & echo up; wait"]})
    pid = r.json()["pid"]
    record = agent.app.state.agent.sandboxes.processes(sandbox).get(pid)
    while "up" not in record.stdout.text():
        await asyncio.wait_for(record.stdout.wait_for_more(len(record.stdout)), 10)
    assert (await _ps(agent, sandbox)).count("sleep") == 2
    r = await agent.client.delete(f"/sandboxes/{sandbox}/commands/{pid}?signal=15")
    assert r.status_code == 204
    await asyncio.wait_for(record.finished.wait(), 15)
    assert record.signal == 15
    # The sleeps were signalled in the same round as their parent (runsc kill --pid each).
    for _ in range(50):
        if "sleep" not in await _ps(agent, sandbox):
            break
    assert "sleep" not in await _ps(agent, sandbox)
