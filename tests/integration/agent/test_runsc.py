"""gVisor sandboxes through the agent API: the same behaviour as crun, under gVisor's kernel.

Few and lean: each runsc sandbox costs ≈ 0.3 s to start and delete.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from qbox.agent import mounts
from tests.integration.agent.conftest import DIGEST, Agent, client_for, start_agent
from tests.integration.agent.nettools import CONNECT, host_address, listen, port, received_nothing

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _runsc_installed() -> None:
    assert shutil.which("runsc") is not None, "runsc is not installed (run make setup)"


def leftovers(data_dir: Path, sandbox_id: str) -> list[str]:
    """Anything of a deleted sandbox still on the host."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if sandbox_id.encode() in cmdline:
            found.append(f"process {pid}: {cmdline.decode(errors='replace')[:120]}")
    sandbox_dir = data_dir / "sandboxes" / sandbox_id
    found += [f"mount {m.mount_point}" for m in mounts.read_mountinfo()
              if m.mount_point.startswith(str(sandbox_dir))]
    runsc_root = data_dir / "runtime" / "runsc"
    found += [f"runsc state {p.name}" for p in runsc_root.glob(f"*{sandbox_id}*")]
    cgroups = Path("/sys/fs/cgroup")
    found += [f"cgroup {p}" for p in (*cgroups.glob(f"*/qbox*/{sandbox_id}"),
                                      *cgroups.glob(f"qbox*/{sandbox_id}"))]
    if sandbox_dir.exists():
        found.append(f"directory {sandbox_dir}")
    return found


async def _until_ended(agent: Agent, sandbox_id: str, pid: int) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 10
    while True:
        status = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}")).json()
        if not status["alive"] or time.monotonic() > deadline:
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


async def _start(agent: Agent, sandbox_id: str, script: str) -> int:
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/commands",
                                json={"cmd": "sh", "args": ["-c", script]})
    assert r.status_code == 200, r.text
    return int(r.json()["pid"])


async def test_a_gvisor_sandbox_behaves_like_a_crun_one(agent: Agent, data_dir: Path) -> None:
    assert (await agent.client.get("/health")).json()["runtimes"] == ["crun", "runsc"]
    sandbox = await agent.create(runtime="runsc")
    beside = await agent.create()  # a crun sandbox on the same agent

    # gVisor's kernel answers, not the host's.
    assert "gVisor" in (await agent.exec(sandbox, "dmesg", user="root"))["stdout"]
    assert "gVisor" not in (await agent.exec(beside, "cat", "/proc/version"))["stdout"]

    assert (await agent.exec(sandbox, "id", "-u"))["stdout"] == "1000\n"
    assert (await agent.exec(sandbox, "id", "-u", user="root"))["stdout"] == "0\n"
    failed = await agent.exec(sandbox, "sh", "-c", "echo oops >&2; exit 3")
    assert (failed["exitCode"], failed["stderr"]) == (3, "oops\n")
    # stat(2) of a named path works (statx with AT_NO_AUTOMOUNT: EINVAL in older runsc).
    assert (await agent.exec(sandbox, "ls", "-l", "/etc/hostname"))["exitCode"] == 0
    timed_out = await agent.exec(sandbox, "sleep", "30", timeoutSeconds=1)
    assert (timed_out["timedOut"], timed_out["exitCode"]) == (True, 137)

    # /tmp is the rootfs's, shared with the host both ways (the files API works on it).
    rootfs = data_dir / "sandboxes" / sandbox / "rootfs"
    (rootfs / "tmp" / "from-host").write_text("written outside\n")
    assert (await agent.exec(sandbox, "cat", "/tmp/from-host"))["stdout"] == "written outside\n"
    await agent.exec(sandbox, "sh", "-c", "echo written inside > /tmp/from-inside")
    assert (rootfs / "tmp" / "from-inside").read_text() == "written inside\n"

    # Background commands: pids as the sandbox sees them, logs, signals, exit statuses.
    trapping = await _start(agent, sandbox, "echo started; trap 'echo got-term; exit 7' TERM; "
                                            "while :; do sleep 0.1; done")
    sleeper = await _start(agent, sandbox, "exec sleep 30")
    ps = (await agent.exec(sandbox, "ps", "-e", "-o", "pid=,args="))["stdout"]
    assert f"{sleeper} sleep 30" in [line.strip() for line in ps.splitlines()], ps
    status = (await agent.client.get(f"/sandboxes/{sandbox}/commands/{trapping}")).json()
    assert status["alive"] is True
    r = await agent.client.delete(f"/sandboxes/{sandbox}/commands/{trapping}?signal=15")
    assert r.status_code == 204
    ended = await _until_ended(agent, sandbox, trapping)
    assert (ended["alive"], ended["exitCode"], ended["signal"]) == (False, 7, 0)
    logs = (await agent.client.get(f"/sandboxes/{sandbox}/commands/{trapping}/logs")).json()
    assert logs["stdout"] == "started\ngot-term\n"
    await agent.client.delete(f"/sandboxes/{sandbox}/commands/{sleeper}?signal=9")
    killed = await _until_ended(agent, sandbox, sleeper)
    assert (killed["alive"], killed["exitCode"], killed["signal"]) == (False, 137, 9)

    assert (await agent.client.delete(f"/sandboxes/{sandbox}")).status_code == 204
    assert leftovers(data_dir, sandbox) == []
    assert (await agent.exec(beside, "true"))["exitCode"] == 0


async def test_a_gvisor_sandbox_keeps_its_network_namespace_and_its_policy(agent: Agent) -> None:
    sandbox = await agent.create(runtime="runsc")
    address = (await agent.client.get(f"/sandboxes/{sandbox}")).json()["address"]
    assert address
    # The host reaches a service inside (gVisor's sockets live in the sandbox's namespace)...
    server = ("import socket\n"
              "s = socket.socket(); s.bind(('0.0.0.0', 8123)); s.listen()\n"
              "c, _ = s.accept(); c.sendall(b'hello from gvisor'); c.close()\n")
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands",
                                json={"cmd": "python3", "args": ["-c", server]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((address, 8123), timeout=2) as conn:
                assert conn.recv(100) == b"hello from gvisor"
                break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    # ...and the host's nftables policy holds for it as for crun: the host is out of reach.
    everywhere = listen("0.0.0.0")
    try:
        outcome = await agent.exec(sandbox, "python3", "-c", CONNECT, host_address(),
                                   str(port(everywhere)))
        assert outcome["stdout"].startswith("failed"), outcome
        assert received_nothing(everywhere)
    finally:
        everywhere.close()


async def test_a_gvisor_sandbox_survives_an_agent_restart(data_dir: Path,
                                                          test_rootfs: Path) -> None:
    sandbox = "sb_gvisorrestart1"
    app, _ = await start_agent(data_dir, test_rootfs)
    async with app.router.lifespan_context(app), client_for(app) as client:
        r = await client.post("/sandboxes", json={"id": sandbox, "imageDigest": DIGEST,
                                                  "runtime": "runsc", "envs": {"KEPT": "yes"}})
        assert r.status_code == 201, r.text
        await client.post(f"/sandboxes/{sandbox}/exec",
                          json={"cmd": "sh", "args": ["-c", "echo before > /tmp/mark"]})
    state = json.loads((data_dir / "sandboxes" / sandbox / "sandbox.json").read_text())
    assert state["runtime"] == "runsc"

    app, _ = await start_agent(data_dir, test_rootfs)
    async with app.router.lifespan_context(app), client_for(app) as client:
        listed = (await client.get("/sandboxes")).json()
        assert [(s["id"], s["status"]) for s in listed] == [(sandbox, "running")]
        r = await client.post(f"/sandboxes/{sandbox}/exec",
                              json={"cmd": "sh", "args": ["-c", "cat /tmp/mark; echo $KEPT; "
                                                                "cat /proc/version"]})
        out = r.json()["stdout"].splitlines()
        assert out[:2] == ["before", "yes"]
        assert (await client.post(f"/sandboxes/{sandbox}/exec", json={
            "cmd": "dmesg", "user": "root"})).json()["stdout"].startswith("[")
        assert (await client.delete(f"/sandboxes/{sandbox}")).status_code == 204
    assert leftovers(data_dir, sandbox) == []


async def test_each_user_of_a_gvisor_sandbox_runs_what_its_memory_holds(agent: Agent) -> None:
    sandbox = await agent.create(runtime="runsc", memoryMb=128)
    # (128 MiB - 32 MiB) / 3 MiB: runsc_spec.tasks_limit, given to every exec by gVisor's kernel.
    limit = await agent.exec(sandbox, "python3", "-c",
                             "import resource; print(resource.getrlimit(resource.RLIMIT_NPROC))")
    assert limit["stdout"] == "(32, 32)\n"
    held = await agent.exec(sandbox, "sh", "-c", "for i in $(seq 40); do sleep 30 & done 2>&1")
    assert "Cannot fork" in held["stdout"] or "temporarily unavailable" in held["stdout"], held
    # Root counts on its own: it can still look, and end the user's processes.
    counted = await agent.exec(sandbox, "sh", "-c", "ps -o pid= -u user | wc -l", user="root")
    assert 20 <= int(counted["stdout"]) <= 32, counted
    killed = await agent.exec(sandbox, "sh", "-c", "pkill -9 -u user; echo done", user="root")
    assert killed["stdout"] == "done\n"
    assert (await agent.exec(sandbox, "echo", "ok"))["stdout"] == "ok\n"
