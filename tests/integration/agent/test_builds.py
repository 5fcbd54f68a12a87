"""Template builds end to end on the agent: real image store, real crun, real overlayfs.

The base is ``tests/oci_images.busybox_layout`` (busybox-static in two
layers, user 1000); builds go through ``POST /internal/v1/builds`` of an
in-process agent with its default isolation (user namespace, seccomp, disk
quota). The ``data_dir`` fixture removes every container, mount and netns
the agent may leave, even when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from qbox.agent import mounts
from qbox.agent.app import create_app
from qbox.agent.images import build_layer
from qbox.agent.sandbox import SandboxParams
from qbox.agent.settings import AgentSettings
from qbox.core.ids import new_sandbox_id
from tests.integration.agent.conftest import SECRET, client_for
from tests.oci_images import busybox_layout
from tests.qbox_process import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def agent(data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    if os.geteuid() != 0 or shutil.which("crun") is None or shutil.which("umoci") is None:
        pytest.fail("build integration tests need root, crun, skopeo and umoci")
    settings = AgentSettings(data_dir=data_dir, secret=SECRET, import_dirs=(str(data_dir.parent),),
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        try:
            yield client
        finally:
            for sandbox in (await client.get("/sandboxes")).json():
                await client.delete(f"/sandboxes/{sandbox['id']}")


@pytest.fixture
def base_ref(tmp_path: Path) -> str:
    # In the agents' import dir (tmp_path; their data dirs are in it too, and stay refused).
    return busybox_layout(tmp_path / "layout")


async def _build(client: httpx.AsyncClient, ref: str, steps: list[dict[str, Any]],
                 **extra: Any) -> list[dict[str, Any]]:
    body = {"name": "demo", "ref": ref, "steps": steps, "memoryMb": 256, **extra}
    async with client.stream("POST", "/builds", json=body, timeout=120) as response:
        assert response.status_code == 200
        return [json.loads(line) async for line in response.aiter_lines() if line]


def _lines(events: list[dict[str, Any]]) -> list[str]:
    return [e["line"] for e in events if e["type"] == "log"]


async def _exec(client: httpx.AsyncClient, sandbox_id: str, script: str,
                **extra: Any) -> dict[str, Any]:
    r = await client.post(f"/sandboxes/{sandbox_id}/exec",
                          json={"cmd": "/bin/sh", "args": ["-c", script], **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _left_behind(data_dir: Path) -> tuple[list[str], list[str], list[str]]:
    sandboxes = data_dir / "sandboxes"
    tmp = data_dir / "images" / "tmp"
    return ([p.name for p in sandboxes.iterdir()] if sandboxes.is_dir() else [],
            [m.mount_point for m in mounts.read_mountinfo()
             if m.mount_point.startswith(str(sandboxes) + "/")],
            [p.name for p in tmp.iterdir()] if tmp.is_dir() else [])


async def test_a_build_becomes_an_image_sandboxes_run(agent: httpx.AsyncClient, base_ref: str,
                                                      data_dir: Path) -> None:
    steps: list[dict[str, Any]] = [
        {"run": "echo hello > /hello && mkdir -p /data && echo made /data"},
        {"copy": {"path": "/data/greeting.txt", "content": "hi there\n", "mode": 0o640,
                  "user": "user"}},
        {"env": {"FOO": "bar"}},
        {"workdir": "/data"},
        {"run": "id -u > /tmp/uid; pwd; echo $FOO", "user": "user"},
    ]
    started = time.monotonic()
    events = await _build(agent, base_ref, steps, env={"BASE_ENV": "1"})
    seconds = time.monotonic() - started
    print(f"\nbusybox build, {len(steps)} steps: {seconds:.2f} s")
    result = events[-1]
    assert result["type"] == "result", events
    lines = _lines(events)
    assert "made /data" in lines and "/data" in lines and "bar" in lines
    assert "step 5/5: run (user): id -u > /tmp/uid; pwd; echo $FOO" in lines
    assert any(line.startswith("committing layer: ") for line in lines)
    assert result["digest"] != result["baseDigest"] and result["sizeBytes"] > 0
    assert _left_behind(data_dir) == ([], [], [])

    sandbox_id = new_sandbox_id()
    r = await agent.post("/sandboxes", json={"id": sandbox_id, "imageDigest": result["digest"],
                                             "memoryMb": 256, "workdir": "/data"})
    assert r.status_code == 201, r.text
    out = await _exec(agent, sandbox_id,
                      "cat /hello /tmp/uid; stat -c '%u %a' greeting.txt; pwd; "
                      "echo $FOO $BASE_ENV; cat /etc/hostname; ls -a /home/user | wc -l")
    assert out["exitCode"] == 0, out
    assert out["stdout"].splitlines() == ["hello", "1000", "1000 640", "/data", "bar 1",
                                          sandbox_id, "2"]
    # Files qbox seeded at build time did not become part of the image.
    hosts = await _exec(agent, sandbox_id, "cat /etc/hosts")
    assert sandbox_id in hosts["stdout"]


async def test_a_second_build_of_the_same_base_unpacks_nothing(
        agent: httpx.AsyncClient, base_ref: str, data_dir: Path) -> None:
    first = await _build(agent, base_ref, [])
    assert first[-1]["type"] == "result"
    steps: list[dict[str, Any]] = [{"run": "echo one > /one"}, {"env": {"A": "1"}}, {"run": "echo $A > /two"}]
    started = time.monotonic()
    second = await _build(agent, base_ref, steps, name="other")
    print(f"\nbusybox build, 3 steps, base already here: {time.monotonic() - started:.2f} s")
    assert second[-1]["type"] == "result", second
    lines = _lines(second)
    assert any("already unpacked" in line for line in lines), lines
    assert not any(line.startswith("unpacking") for line in lines), lines
    assert second[-1]["baseDigest"] == first[-1]["digest"]
    assert _left_behind(data_dir) == ([], [], [])


async def test_a_failing_step_fails_the_build_and_leaves_nothing(
        agent: httpx.AsyncClient, base_ref: str, data_dir: Path) -> None:
    events = await _build(agent, base_ref, [{"run": "echo fine"},
                                            {"run": "echo broken >&2; exit 7"},
                                            {"run": "echo never"}])
    error = events[-1]
    assert error == {"type": "error", "code": "build_failed", "step": 2,
                     "message": "step 2/3 (run: echo broken >&2; exit 7) exited with code 7"}
    lines = _lines(events)
    assert lines[-3:-1] == ["broken", lines[-2]] and lines[-2].startswith("step 2/3: exit code 7")
    assert "never" not in lines
    assert (await agent.get("/sandboxes")).json() == []
    assert _left_behind(data_dir) == ([], [], [])


async def test_a_build_without_steps_is_its_base(agent: httpx.AsyncClient, base_ref: str,
                                                 data_dir: Path) -> None:
    events = await _build(agent, base_ref, [])
    result = events[-1]
    assert result["type"] == "result", events
    assert result["digest"] == result["baseDigest"] and result["pushedRef"] is None
    assert not any(line.startswith("step ") for line in _lines(events))
    assert _left_behind(data_dir) == ([], [], [])


async def test_an_unknown_ref_is_a_validation_error(agent: httpx.AsyncClient,
                                                    tmp_path: Path) -> None:
    events = await _build(agent, f"oci:{tmp_path}/missing:x", [])
    assert events[-1]["type"] == "error" and events[-1]["code"] == "validation_error"


async def test_a_client_going_away_cancels_the_build(data_dir: Path, base_ref: str) -> None:
    """Over a real socket (the in-process transport cannot disconnect mid-stream)."""
    settings = AgentSettings(data_dir=data_dir, secret=SECRET, import_dirs=(str(data_dir.parent),),
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the agent did not start"
            await asyncio.sleep(0.05)
        body = {"name": "slow", "ref": base_ref, "memoryMb": 256,
                "steps": [{"run": "echo started; sleep 120"}]}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/internal/v1",
                                     headers={"Authorization": f"Bearer {SECRET}"},
                                     timeout=60) as client:
            async with client.stream("POST", "/builds", json=body) as response:
                async for line in response.aiter_lines():
                    if line and json.loads(line).get("line") == "started":
                        break
                assert len(_left_behind(data_dir)[0]) == 1  # the build sandbox, running
            deadline = time.monotonic() + 20
            while _left_behind(data_dir) != ([], [], []) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert _left_behind(data_dir) == ([], [], [])
            assert (await client.get("/sandboxes")).json() == []
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


async def test_a_build_under_gvisor(agent: httpx.AsyncClient, base_ref: str,
                                   data_dir: Path) -> None:
    # scripts/setup.sh installs runsc: a host without it is not set up.
    assert "runsc" in (await agent.get("/health")).json()["runtimes"]
    events = await _build(agent, base_ref, [{"run": "echo in-gvisor > /marker"}],
                          runtime="runsc")
    result = events[-1]
    assert result["type"] == "result", events
    sandbox_id = new_sandbox_id()
    r = await agent.post("/sandboxes", json={"id": sandbox_id, "imageDigest": result["digest"],
                                             "memoryMb": 256})
    assert r.status_code == 201, r.text
    assert (await _exec(agent, sandbox_id, "cat /marker"))["stdout"] == "in-gvisor\n"
    assert _left_behind(data_dir)[0] == [sandbox_id]


async def test_a_restarted_agent_removes_a_build_sandbox_left_behind(
        data_dir: Path, base_ref: str) -> None:
    settings = AgentSettings(data_dir=data_dir, secret=SECRET, import_dirs=(str(data_dir.parent),),
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        r = await client.post("/images", json={"ref": base_ref, "name": "base"})
        assert r.status_code == 200, r.text
        manager = app.state.agent.sandboxes
        # As a build that the agent's death interrupted leaves it: running, on disk.
        await manager.create(SandboxParams("sb_buildleftover0001", r.json()["digest"],
                                           memory_mb=256, build=True))
        assert (await client.get("/sandboxes")).json() == []
    assert _left_behind(data_dir)[0] == ["sb_buildleftover0001"]
    again = create_app(settings)
    async with again.router.lifespan_context(again):
        assert _left_behind(data_dir)[:2] == ([], [])
        runtime = again.state.agent.runtime
        assert "sb_buildleftover0001" not in {c.id for c in await runtime.list()}


# --- the layer copy, with ids only root may set ------------------------------------


async def test_copy_and_clean_unshift_ids_and_keep_setuid_bits(tmp_path: Path) -> None:
    from qbox.agent.idmap import IdMapping

    mapping = IdMapping(200_000, 65_536)
    upper = tmp_path / "upper"
    upper.mkdir()
    baseline = build_layer.snapshot(upper)
    tool = upper / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chown(tool, 200_000, 200_000 + 50)
    os.chmod(tool, 0o4755)
    os.symlink("tool", upper / "link")
    os.lchown(upper / "link", 201_000, 201_000)
    os.mknod(upper / "gone", 0o600 | 0o020000, 0)  # a whiteout, host root's
    os.setxattr(upper, "trusted.overlay.origin", b"x")
    os.setxattr(upper, "trusted.overlay.opaque", b"y")
    layer = tmp_path / "layer"
    await build_layer.copy_tree(upper, layer)

    build_layer.clean(layer, upper, baseline, mapping)

    st = os.lstat(layer / "tool")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 50, 0o4755)
    assert os.lstat(layer / "link")[4:6] == (1000, 1000)
    assert os.lstat(layer / "gone")[4:6] == (0, 0)
    assert os.listxattr(layer) == ["trusted.overlay.opaque"]
