"""Real Jupyter kernels in real sandboxes (crun, the built-in Python image): a lazy sandbox
has no kernel until its first code call, an eager one has it from boot, a claim's envs
reach a kernel started before it, and a figure left unshown comes back as a PNG.

The built-in image comes from the machine-wide cache (built there first if missing) and
is imported into a store in a temp dir once per module, removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from qbox.agent.app import create_app
from qbox.agent.images import ImageStore, base_image_ref, ensure_base_image, machine_cache_dir
from qbox.agent.settings import AgentSettings
from qbox.core.ids import new_sandbox_id
from tests.integration.agent.conftest import SECRET, Agent, client_for

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kernel_image() -> Iterator[tuple[ImageStore, str]]:
    assert os.geteuid() == 0, "real sandboxes need root"
    cache = machine_cache_dir()
    asyncio.run(ensure_base_image(cache))
    scratch = Path(tempfile.mkdtemp(prefix="qbox-kernels-it-"))
    try:
        store = ImageStore(scratch / "store")
        info = asyncio.run(store.import_image(base_image_ref(cache), "python"))
        yield store, info.digest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
async def kernels(data_dir: Path, kernel_image: tuple[ImageStore, str]) -> AsyncIterator[
        tuple[Agent, str]]:
    store, digest = kernel_image
    settings = AgentSettings(data_dir=data_dir, secret=SECRET,
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app), client_for(app) as client:
        agent = Agent(app, client, settings)
        try:
            yield agent, digest
        finally:
            for sandbox in (await client.get("/sandboxes")).json():
                await client.delete(f"/sandboxes/{sandbox['id']}")


async def create(agent: Agent, digest: str, **extra: Any) -> str:
    sandbox_id = new_sandbox_id()
    r = await agent.client.post("/sandboxes", json={
        "id": sandbox_id, "imageDigest": digest, "vcpus": 1, "memoryMb": 1024, **extra})
    assert r.status_code == 201, r.text
    return sandbox_id


async def execute(agent: Agent, sandbox_id: str, code: str) -> list[dict[str, Any]]:
    # A start that outlasts the agent's bounded wait answers a transient 503: retried.
    for _ in range(60):
        r = await agent.client.post(f"/sandboxes/{sandbox_id}/code/execute",
                                    json={"code": code})
        if r.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.content.splitlines()]


def results(events: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(e["result"]["text/plain"]) for e in events if e["kind"] == "result"]


def pngs(events: list[dict[str, Any]]) -> list[bytes]:
    displays = [e["output"]["display"] for e in events
                if e["kind"] == "output" and "display" in e["output"]]
    return [base64.b64decode(d["image/png"]) for d in displays if "image/png" in d]


def stdout(events: list[dict[str, Any]]) -> str:
    return "".join(e["output"]["text"] for e in events
                   if e["kind"] == "output" and e["output"].get("stream") == "stdout")


def sandbox_commands(agent: Agent, sandbox_id: str) -> list[str]:
    """The command lines of every process in the sandbox's cgroup, read from the host."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        directory = base / agent.cgroup_parent / sandbox_id
        if directory.is_dir():
            break
    else:
        raise AssertionError(f"no cgroup for {sandbox_id}")
    commands = []
    for procs in directory.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes()
                                .replace(b"\0", b" ").decode())
            except OSError:
                continue  # gone meanwhile
    return commands


def kernel_processes(agent: Agent, sandbox_id: str) -> list[str]:
    return [c for c in sandbox_commands(agent, sandbox_id)
            if "kernel_host.py" in c or "ipykernel" in c]


async def test_a_lazy_sandbox_starts_its_kernel_on_the_first_code_call(
        kernels: tuple[Agent, str]) -> None:
    agent, digest = kernels
    sandbox_id = await create(agent, digest)
    assert (await agent.exec(sandbox_id, "true"))["exitCode"] == 0
    await asyncio.sleep(2)  # an eager sandbox's kernel host would be up by now
    assert sandbox_commands(agent, sandbox_id)  # its init is there, and seen
    assert kernel_processes(agent, sandbox_id) == []
    events = await execute(agent, sandbox_id, "1+1")
    assert results(events) == [b"2"]
    running = kernel_processes(agent, sandbox_id)
    assert any("kernel_host.py" in c for c in running), running
    assert any("ipykernel" in c for c in running), running


async def test_an_eager_sandbox_has_its_kernel_before_any_call(
        kernels: tuple[Agent, str]) -> None:
    agent, digest = kernels
    sandbox_id = await create(agent, digest, codeInterpreter="eager")
    for _ in range(120):
        if any("ipykernel" in c for c in kernel_processes(agent, sandbox_id)):
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the eager sandbox's kernel did not start")


async def test_a_claim_reaches_a_kernel_started_before_it(kernels: tuple[Agent, str]) -> None:
    agent, digest = kernels
    sandbox_id = await create(agent, digest, envs={"A": "boot"})
    show = "import os; print(os.environ.get('A'), os.environ.get('B'))"
    assert stdout(await execute(agent, sandbox_id, show)) == "boot None\n"
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/claim", json={
        "envs": {"A": "claimed", "B": "new"}, "vcpus": 1, "memoryMb": 512})
    assert r.status_code == 200, r.text
    assert stdout(await execute(agent, sandbox_id, show)) == "claimed new\n"
    # A subprocess of the kernel inherits them too, and a new command has them.
    shell = "import subprocess; print(subprocess.run(['sh', '-c', 'echo $A $B'], " \
            "capture_output=True, text=True).stdout, end='')"
    assert stdout(await execute(agent, sandbox_id, shell)) == "claimed new\n"
    assert (await agent.exec(sandbox_id, "sh", "-c", "echo $A $B"))["stdout"] == "claimed new\n"


async def test_a_figure_left_unshown_comes_back_as_a_png(kernels: tuple[Agent, str]) -> None:
    agent, digest = kernels
    sandbox_id = await create(agent, digest)
    events = await execute(agent, sandbox_id, "import matplotlib.pyplot as plt\nplt.plot([1, 2])")
    [png] = pngs(events)
    assert png.startswith(PNG_MAGIC)
    # Shown explicitly: one PNG, not a second one at the end of the cell.
    events = await execute(agent, sandbox_id, "plt.plot([3, 1])\nplt.show()")
    assert [p[:8] for p in pngs(events)] == [PNG_MAGIC]
    # A cell without a figure shows none (the last one was closed once shown).
    assert pngs(await execute(agent, sandbox_id, "1")) == []
