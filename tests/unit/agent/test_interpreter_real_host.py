"""The agent driving the real guest kernel host and real kernels (ipykernel, bash_kernel).

The fake runtime runs the host on this machine, so this checks the agent
and ``guest/kernel_host.py`` against each other (no root, no sandbox):
framing, events, timeouts, kernel death, restart.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from qbox.agent.interpreter.manager import GUEST_SOURCE
from tests.unit.agent.interpreter_fixtures import CodeAgent, make_code_agent_fixture, text_of

pytestmark = pytest.mark.timeout(240)

code_agent = make_code_agent_fixture(ready_wait=60.0)


def _decoded(data: dict[str, str], mime: str = "text/plain") -> str:
    return base64.b64decode(data[mime]).decode()


async def _real_sandbox(agent: CodeAgent, tmp_path: Path) -> str:
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "bash"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"],
        "display_name": "Bash", "language": "bash", "env": {"PS1": "$"}}))
    agent.manager.interpreters.host_argv = (sys.executable,
                                            str(GUEST_SOURCE / "kernel_host.py"))
    # On this machine, not in a sandbox: Jupyter's files go to the test's directory.
    return await agent.create(envs={
        "HOME": str(tmp_path), "JUPYTER_PATH": str(jupyter),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "MPLBACKEND": "Agg"})


async def _context(agent: CodeAgent, sandbox_id: str, language: str, cwd: Path) -> str:
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                json={"language": language, "cwd": str(cwd)})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "idle"
    context_id: str = r.json()["id"]
    return context_id


async def test_real_kernels_through_the_agent(code_agent: CodeAgent, tmp_path: Path) -> None:
    sandbox_id = await _real_sandbox(code_agent, tmp_path)
    python = await _context(code_agent, sandbox_id, "python", tmp_path)

    events = await code_agent.events(
        sandbox_id, contextId=python,
        code="import os\nprint(os.getcwd())\nprint(os.environ.get('QB'))\n6 * 7",
        env={"QB": "from-env"})
    assert events[0] == {"kind": "started", "contextId": python, "language": "python"}
    assert text_of(events) == f"{tmp_path}\nfrom-env\n"
    [result] = [e["result"] for e in events if e["kind"] == "result"]
    assert _decoded(result) == "42"
    assert events[-1]["kind"] == "complete" and events[-1]["timedOut"] is False

    events = await code_agent.events(
        sandbox_id, contextId=python,
        code="from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))\n1/0")
    [display] = [e["output"]["display"] for e in events
                 if e["kind"] == "output" and "display" in e["output"]]
    assert _decoded(display, "text/html") == "<b>hi</b>"
    [error] = [e["error"] for e in events if e["kind"] == "error"]
    assert error["name"] == "ZeroDivisionError" and error["traceback"]

    events = await code_agent.events(sandbox_id, contextId=python,
                                     code="import time\ntime.sleep(30)", timeoutSeconds=1)
    assert events[-1]["kind"] == "complete" and events[-1]["timedOut"] is True

    bash = await _context(code_agent, sandbox_id, "sh", tmp_path)
    assert text_of(await code_agent.events(sandbox_id, contextId=bash,
                                           code="echo $((40 + 2))")) == "42\n"


async def test_a_real_kernel_dying_and_restarting(code_agent: CodeAgent,
                                                  tmp_path: Path) -> None:
    sandbox_id = await _real_sandbox(code_agent, tmp_path)
    python = await _context(code_agent, sandbox_id, "python", tmp_path)
    await code_agent.events(sandbox_id, contextId=python, code="x = 1")
    events = await code_agent.events(sandbox_id, contextId=python, code="import os; os._exit(1)")
    assert [e["error"]["name"] for e in events if e["kind"] == "error"] == ["KernelDied"]
    assert events[-1]["kind"] == "complete"
    r = await code_agent.execute(sandbox_id, contextId=python, code="x")
    assert r.status_code == 409 and "restart" in r.json()["error"]["message"]
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts/{python}/restart")
    assert r.status_code == 200, r.text
    events = await code_agent.events(sandbox_id, contextId=python, code="x")
    assert [e["error"]["name"] for e in events if e["kind"] == "error"] == ["NameError"]
