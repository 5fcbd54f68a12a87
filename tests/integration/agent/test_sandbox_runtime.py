"""The agent's internal API on real crun: who commands run as, what they see, how they end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from qbox.agent import mounts
from tests.integration.agent.conftest import Agent

pytestmark = pytest.mark.integration


async def test_commands_run_as_the_sandbox_user_by_default(agent: Agent, sandbox: str) -> None:
    assert (await agent.exec(sandbox, "id", "-u"))["stdout"] == "1000\n"
    assert (await agent.exec(sandbox, "id", "-u", user="root"))["stdout"] == "0\n"
    assert (await agent.exec(sandbox, "id", "-un", user="1000"))["stdout"] == "user\n"
    home = await agent.exec(sandbox, "sh", "-c", "echo $HOME; pwd")
    assert home["stdout"] == "/home/user\n/home/user\n"
    assert (await agent.exec(sandbox, "sh", "-c", "echo $HOME", user="root"))["stdout"] == "/root\n"


async def test_unprivileged_commands_have_no_capabilities(agent: Agent, sandbox: str) -> None:
    out = (await agent.exec(sandbox, "grep", "-E", "^Cap(Eff|Prm|Bnd)", "/proc/self/status"))
    assert all(line.split()[1] == "0000000000000000" for line in out["stdout"].splitlines())
    root = await agent.exec(sandbox, "grep", "^CapEff", "/proc/self/status", user="root")
    assert root["stdout"].split()[1] != "0000000000000000"


async def test_exit_codes_stderr_env_cwd_and_stdin(agent: Agent) -> None:
    sandbox = await agent.create(envs={"FROM_SPAWN": "spawn"})
    result = await agent.exec(sandbox, "sh", "-c", "echo $FROM_SPAWN $FROM_CALL; pwd; "
                              "echo problem >&2; exit 42", env={"FROM_CALL": "call"}, cwd="/tmp")
    assert result == {"stdout": "spawn call\n/tmp\n", "stderr": "problem\n", "exitCode": 42,
                      "timedOut": False}
    piped = await agent.exec(sandbox, "python3", "-c", "import sys; print(sys.stdin.read()[::-1])",
                             stdin="olleh")
    assert piped["stdout"] == "hello\n"


async def test_missing_program_and_missing_cwd_are_validation_errors(agent: Agent,
                                                                     sandbox: str) -> None:
    for body in ({"cmd": "no-such-program"}, {"cmd": "true", "cwd": "/no/such/dir"},
                 {"cmd": "true", "user": "nobody-here"}):
        r = await agent.client.post(f"/sandboxes/{sandbox}/exec", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "validation_error"


async def test_exec_timeout_kills_and_reports(agent: Agent, sandbox: str) -> None:
    started = time.monotonic()
    result = await agent.exec(sandbox, "sleep", "60", timeoutSeconds=0.5)
    assert time.monotonic() - started < 10
    assert result["timedOut"] is True and result["exitCode"] == 137
    # The sandbox is still fine afterwards.
    assert (await agent.exec(sandbox, "true"))["exitCode"] == 0


async def _status(agent: Agent, sandbox: str, pid: int) -> dict:  # type: ignore[type-arg]
    r = await agent.client.get(f"/sandboxes/{sandbox}/commands/{pid}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _wait_exit(agent: Agent, sandbox: str, pid: int) -> dict:  # type: ignore[type-arg]
    for _ in range(200):
        status = await _status(agent, sandbox, pid)
        if not status["alive"]:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


async def test_background_command_status_logs_and_signal(agent: Agent, sandbox: str) -> None:
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands", json={
        "cmd": "python3", "args": ["-u", "-c", "import time\nprint('ready')\ntime.sleep(60)"]})
    assert r.status_code == 200, r.text
    pid = r.json()["pid"]
    assert pid > 1  # a pid inside the sandbox, not the host's
    status = await _status(agent, sandbox, pid)
    assert status["alive"] is True and status["exitCode"] == 0 and status["signal"] == 0
    for _ in range(100):
        logs = (await agent.client.get(f"/sandboxes/{sandbox}/commands/{pid}/logs")).json()
        if logs["stdout"]:
            break
        await asyncio.sleep(0.05)
    assert logs == {"stdout": "ready\n", "stderr": ""}
    # The pid is the one the sandbox itself sees.
    ps = await agent.exec(sandbox, "ps", "-o", "pid=", "-C", "python3")
    assert str(pid) in ps["stdout"].split()
    assert (await agent.client.delete(f"/sandboxes/{sandbox}/commands/{pid}?signal=15")
            ).status_code == 204
    status = await _wait_exit(agent, sandbox, pid)
    assert (status["signal"], status["exitCode"]) == (15, 143)


async def test_exited_process_stays_queryable(agent: Agent, sandbox: str) -> None:
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands",
                                json={"cmd": "sh", "args": ["-c", "echo done; exit 3"]})
    pid = r.json()["pid"]
    status = await _wait_exit(agent, sandbox, pid)
    assert (status["exitCode"], status["signal"]) == (3, 0)
    await asyncio.sleep(0.2)
    status = await _status(agent, sandbox, pid)
    assert status["exitCode"] == 3 and "endedAt" in status
    logs = (await agent.client.get(f"/sandboxes/{sandbox}/commands/{pid}/logs")).json()
    assert logs["stdout"] == "done\n"
    assert (await agent.client.delete(f"/sandboxes/{sandbox}/commands/{pid}?signal=9")
            ).status_code == 204
    listing = (await agent.client.get(f"/sandboxes/{sandbox}/commands")).json()
    assert any(c["pid"] == pid and c["alive"] is False for c in listing)


async def test_a_process_killed_inside_reports_its_signal(agent: Agent, sandbox: str) -> None:
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands",
                                json={"cmd": "sh", "args": ["-c", "kill -KILL $$"]})
    status = await _wait_exit(agent, sandbox, r.json()["pid"])
    assert (status["signal"], status["exitCode"]) == (9, 137)
    # ... which differs from a plain exit 137.
    assert (await agent.exec(sandbox, "sh", "-c", "exit 137"))["exitCode"] == 137


async def test_pid_1_is_the_init_and_host_processes_are_invisible(agent: Agent,
                                                                  sandbox: str) -> None:
    cmdline = await agent.exec(sandbox, "cat", "/proc/1/cmdline")
    assert cmdline["stdout"] == "/.qbox/init\0-P\0"
    # Only the sandbox's own processes exist in its PID namespace: its init and this ps.
    ps = await agent.exec(sandbox, "ps", "-e", "-o", "pid=,comm=")
    seen = {tuple(line.split(None, 1)) for line in ps["stdout"].splitlines()}
    assert {comm for _, comm in seen} == {"init", "ps"}, seen
    assert ("1", "init") in seen


async def test_hostname_network_and_limits(agent: Agent) -> None:
    sandbox = await agent.create(vcpus=2, memoryMb=256)
    assert (await agent.exec(sandbox, "hostname"))["stdout"] == f"{sandbox}\n"
    assert sandbox in (await agent.exec(sandbox, "cat", "/etc/hosts"))["stdout"]
    # Its own namespace: loopback and its veth end (test_network.py covers the rest).
    assert (await agent.exec(sandbox, "ls", "/sys/class/net"))["stdout"].split() == ["eth0", "lo"]
    loopback = await agent.exec(sandbox, "python3", "-c", (
        "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
        "c=socket.create_connection(s.getsockname()); print('ok')"))
    assert loopback["stdout"] == "ok\n"
    memory = Path(f"/sys/fs/cgroup/memory/{agent.cgroup_parent}/{sandbox}/memory.limit_in_bytes")
    if memory.exists():
        assert int(memory.read_text()) == 256 * 1024 * 1024
        cpu = Path(f"/sys/fs/cgroup/cpu/{agent.cgroup_parent}/{sandbox}")
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 200_000
        assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
        pids = Path(f"/sys/fs/cgroup/pids/{agent.cgroup_parent}/{sandbox}/pids.max")
        assert int(pids.read_text()) == 4096


async def test_writes_stay_in_the_sandbox(agent: Agent, test_rootfs: Path) -> None:
    first, second = await agent.create(), await agent.create()
    assert (await agent.exec(first, "sh", "-c", "echo mine > /tmp/f; echo x > /home/user/g",
                             ))["exitCode"] == 0
    assert (await agent.exec(first, "cat", "/tmp/f"))["stdout"] == "mine\n"
    assert (await agent.exec(second, "cat", "/tmp/f"))["exitCode"] != 0
    assert not (test_rootfs / "tmp" / "f").exists()
    assert (await agent.exec(first, "touch", "/etc/x"))["exitCode"] != 0  # not root


def _cgroup_dirs(sandbox_id: str) -> list[Path]:
    # Under whichever agent's parent (qbox, qbox-<tag>): a sandbox id is unique.
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/qbox*/{sandbox_id}") if p.exists()]


def _pids_in_cgroup(sandbox_id: str) -> set[int]:
    found = set()
    for directory in _cgroup_dirs(sandbox_id):
        procs = directory / "cgroup.procs"
        if procs.exists():
            found.update(int(p) for p in procs.read_text().split())
    return found


async def test_delete_leaves_nothing_behind(agent: Agent, sandbox: str) -> None:
    await agent.client.post(f"/sandboxes/{sandbox}/commands",
                            json={"cmd": "sleep", "args": ["1000"]})
    await agent.client.post(f"/sandboxes/{sandbox}/commands",
                            json={"cmd": "sh", "args": ["-c", "sleep 1000 & sleep 1000"]})
    await asyncio.sleep(0.1)
    runtime = (await agent.client.get("/health")).json()["runtime"]
    root = agent.settings.runtime_root / runtime
    state = json.loads(subprocess.run([runtime, "--root", str(root), "state", sandbox],
                                      capture_output=True, check=True).stdout)
    host_pids = _pids_in_cgroup(sandbox) | {state["pid"]}
    assert len(host_pids) >= 4
    directory = agent.settings.sandboxes_dir / sandbox
    assert mounts.is_mount_point(directory / "rootfs")

    assert (await agent.client.delete(f"/sandboxes/{sandbox}")).status_code == 204

    assert not directory.exists()
    assert not any(e.mount_point.startswith(str(directory)) for e in mounts.read_mountinfo())
    assert subprocess.run([runtime, "--root", str(root), "state", sandbox],
                          capture_output=True).returncode != 0
    assert _cgroup_dirs(sandbox) == []
    for pid in host_pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} left behind (or a zombie)"
    r = await agent.client.get(f"/sandboxes/{sandbox}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found"
