"""Isolation and limits of crun sandboxes, checked from inside and from the host's side.

User namespace, capabilities, no_new_privs, seccomp, /dev, disk quota, OOM,
pids, rlimits and the runtime's fd hygiene (docs/isolation.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qbox.agent.app import create_app
from qbox.agent.settings import AgentSettings
from tests.integration.agent.conftest import SECRET, Agent, RootfsStore, client_for

pytestmark = pytest.mark.integration

BASE = 100_000
CGROUP_ROOT = Path("/sys/fs/cgroup")

SYSCALL_PROBE = r"""
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    if libc.syscall(number, *args) >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")
calls = {
    "mount": (165, b"none", b"/mnt", b"tmpfs", 0, None), "umount2": (166, b"/proc", 0),
    "unshare": (272, 0x10000000), "setns": (308, 0, 0), "keyctl": (250, 0, 0),
    "add_key": (248, b"user", b"k", b"v", 1, 0), "bpf": (321, 0, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0), "open_by_handle_at": (304, 0, 0, 0),
    "name_to_handle_at": (303, 0, 0, 0, 0, 0), "perf_event_open": (298, 0, 0, 0, 0, 0),
    "userfaultfd": (323, 0), "init_module": (175, 0, 0, 0), "finit_module": (313, 0, 0, 0),
    "delete_module": (176, b"x", 0), "reboot": (169, 0, 0, 0, 0), "swapon": (167, b"/x", 0),
    "pivot_root": (155, b"/", b"/"), "acct": (163, 0), "clock_settime": (227, 0, 0),
    "settimeofday": (164, 0, 0), "iopl": (172, 3), "ioperm": (173, 0, 1, 1),
    "quotactl": (179, 0, 0, 0, 0), "io_uring_setup": (425, 1, 0), "clone3": (435, 0, 0),
}
result = {name: call(*args) for name, args in calls.items()}
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    result["vsock"] = "ok"
except OSError as exc:
    result["vsock"] = errno.errorcode[exc.errno]
print(repr(result))
"""


def _cgroup_pids(sandbox_id: str) -> set[int]:
    found: set[int] = set()
    # Under whichever agent's parent (qbox, qbox-<tag>): a sandbox id is unique.
    for procs in [*CGROUP_ROOT.glob(f"*/qbox*/{sandbox_id}/cgroup.procs"),
                  *CGROUP_ROOT.glob(f"qbox*/{sandbox_id}/cgroup.procs")]:
        if procs.exists():
            found.update(int(p) for p in procs.read_text().split())
    return found


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _init_pid(agent: Agent, sandbox_id: str) -> int:
    root = agent.settings.runtime_root / "crun"
    state = subprocess.run(["crun", "--root", str(root), "state", sandbox_id],
                           capture_output=True, check=True)
    return int(json.loads(state.stdout)["pid"])


async def _command(agent: Agent, sandbox_id: str, argv: list[str], **extra: object) -> int:
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/commands",
                                json={"cmd": argv[0], "args": argv[1:], **extra})
    assert r.status_code == 200, r.text
    return int(r.json()["pid"])


async def _wait_ended(agent: Agent, sandbox_id: str, pid: int, seconds: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}")).json()
        if not status["alive"]:
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"pid {pid} still running after {seconds} s")


def _host_pid_of(sandbox_id: str, comm: str, deadline_s: float = 5) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for pid in _cgroup_pids(sandbox_id):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    return pid
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no {comm} in sandbox {sandbox_id}")


async def test_root_inside_is_an_unprivileged_range_outside(agent: Agent, sandbox: str) -> None:
    assert (await agent.exec(sandbox, "id", "-u", user="root"))["stdout"] == "0\n"
    assert (await agent.exec(sandbox, "id", "-u"))["stdout"] == "1000\n"
    init = _status(_init_pid(agent, sandbox))
    assert init["Uid"].split() == [str(BASE)] * 4 and init["Gid"].split() == [str(BASE)] * 4
    # The image appears owned by the sandbox's root, its home by its user.
    listing = await agent.exec(sandbox, "stat", "-c", "%u:%g", "/etc/passwd", "/home/user")
    assert listing["stdout"].split() == ["0:0", "1000:1000"]
    await _command(agent, sandbox, ["sleep", "30"])
    sleeper = _status(_host_pid_of(sandbox, "sleep"))
    assert sleeper["Uid"].split()[0] == str(BASE + 1000)
    assert sleeper["CapEff"] == sleeper["CapPrm"] == sleeper["CapBnd"] == "0" * 16


async def test_every_process_has_no_new_privs_and_the_seccomp_filter(agent: Agent,
                                                                      sandbox: str) -> None:
    await _command(agent, sandbox, ["sleep", "30"], user="root")
    for pid in (_init_pid(agent, sandbox), _host_pid_of(sandbox, "sleep")):
        status = _status(pid)
        assert status["NoNewPrivs"] == "1", pid
        assert status["Seccomp"] == "2", pid


async def test_files_written_inside_belong_to_the_mapped_ids(agent: Agent, sandbox: str) -> None:
    assert (await agent.exec(sandbox, "sh", "-c", "echo u > /home/user/mine"))["exitCode"] == 0
    root = await agent.exec(sandbox, "sh", "-c", "echo r > /etc/by-root", user="root")
    assert root["exitCode"] == 0
    upper = agent.settings.sandboxes_dir / sandbox / "disk" / "upper"
    assert (upper / "home/user/mine").stat().st_uid == BASE + 1000
    assert (upper / "etc/by-root").stat().st_uid == BASE
    # What the agent wrote into the layer (identity files) is the sandbox root's too.
    assert (upper / "etc/hostname").stat().st_uid == BASE


async def test_forbidden_syscalls_are_refused_even_for_root(agent: Agent, sandbox: str) -> None:
    for user in ("root", None):
        out = await agent.exec(sandbox, "python3", "-c", SYSCALL_PROBE, user=user)
        assert out["exitCode"] == 0, out
        result = eval(out["stdout"])  # noqa: S307 - our own probe's repr of a dict of str
        assert result.pop("clone3") == "ENOSYS"  # so that libc falls back to clone
        assert result == dict.fromkeys(result, "EPERM"), result
    unshare = await agent.exec(sandbox, "unshare", "-r", "true", user="root")
    assert unshare["exitCode"] != 0 and "Operation not permitted" in unshare["stderr"]
    mount = await agent.exec(sandbox, "mount", "-t", "tmpfs", "none", "/mnt", user="root")
    assert mount["exitCode"] != 0
    # Ordinary work still runs: threads, subprocesses, sockets, /proc.
    work = await agent.exec(sandbox, "python3", "-c", (
        "import subprocess, threading, socket; t = threading.Thread(target=print); t.start(); "
        "t.join(); subprocess.run(['true'], check=True); socket.socket().close(); print('ok')"))
    assert work["stdout"].endswith("ok\n"), work


async def test_only_the_usual_devices(agent: Agent, sandbox: str) -> None:
    devices = set((await agent.exec(sandbox, "ls", "/dev"))["stdout"].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} <= devices
    assert not devices & {"kvm", "mem", "kmem", "kmsg", "port", "vda", "loop0", "vsock"}
    assert (await agent.exec(sandbox, "mknod", "/tmp/m", "c", "1", "1",
                             user="root"))["exitCode"] != 0
    masked = await agent.exec(sandbox, "sh", "-c", "cat /proc/kcore /proc/keys | wc -c")
    assert masked["stdout"].strip() == "0"
    sysrq = await agent.exec(sandbox, "sh", "-c", "echo h > /proc/sysrq-trigger", user="root")
    assert sysrq["exitCode"] != 0
    # The sandbox's own sysfs, read-only: its interfaces, not the host's.
    assert (await agent.exec(sandbox, "ls", "/sys/class/net"))["stdout"].split() == ["eth0", "lo"]
    assert (await agent.exec(sandbox, "touch", "/sys/x", user="root"))["exitCode"] != 0


async def test_disk_quota_stops_writes_and_frees_the_host(agent: Agent) -> None:
    before = os.statvfs(agent.settings.data_dir)
    sandbox = await agent.create(diskSizeMb=64)
    fill = await agent.exec(sandbox, "sh", "-c",
                            "dd if=/dev/zero of=/home/user/fill bs=1M count=200 2>&1; "
                            "echo rc=$?; df -m / | tail -1")
    assert "No space left on device" in fill["stdout"] and "rc=1" in fill["stdout"], fill
    assert int(fill["stdout"].split()[-5]) <= 64  # df's size column, in MB
    # Deleting frees the space again (it keeps working after the fill, too).
    assert (await agent.exec(sandbox, "rm", "/home/user/fill"))["exitCode"] == 0
    assert (await agent.exec(sandbox, "sh", "-c", "echo ok > /tmp/x"))["exitCode"] == 0
    image = agent.settings.sandboxes_dir / sandbox / "disk.img"
    assert image.stat().st_blocks * 512 < 16 * 1024 * 1024  # discard gave it back
    assert (await agent.client.delete(f"/sandboxes/{sandbox}")).status_code == 204
    assert not image.exists()
    loops = [p.read_text().strip() for p in Path("/sys/block").glob("loop*/loop/backing_file")]
    assert not [b for b in loops if b.startswith(str(agent.settings.data_dir))]
    after = os.statvfs(agent.settings.data_dir)
    # The host lost nothing but the golden image (a few MB) and noise from other writers.
    assert (before.f_bavail - after.f_bavail) * before.f_frsize < 32 * 1024 * 1024


async def test_memory_hog_is_oom_killed_and_reported(agent: Agent) -> None:
    sandbox = await agent.create(memoryMb=64)
    hog = ["python3", "-c", "b = []\nwhile True: b.append(bytearray(16 << 20))"]
    pid = await _command(agent, sandbox, hog)
    status = await _wait_ended(agent, sandbox, pid)
    assert status["signal"] == 9 and status["oomKilled"] is True, status
    # The sandbox itself lives on, and a plain command is not flagged.
    ok = await agent.exec(sandbox, "true")
    assert ok["exitCode"] == 0 and "oomKilled" not in ok
    quiet = await _wait_ended(agent, sandbox, await _command(agent, sandbox, ["true"]))
    assert quiet["oomKilled"] is False
    # /exec says so too (only when it happened).
    killed = await agent.exec(sandbox, *hog)
    assert killed["exitCode"] == 137 and killed["oomKilled"] is True
    state = (await agent.client.get(f"/sandboxes/{sandbox}")).json()
    assert state["status"] == "running"


async def test_rlimits(agent: Agent, sandbox: str) -> None:
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 65536 if hard < 0 else min(65536, hard)
    out = await agent.exec(sandbox, "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c")
    assert out["stdout"].split() == [str(expected), str(expected), "0"]


async def test_no_host_fds_and_no_way_out_through_proc(agent: Agent, sandbox: str) -> None:
    fds = await agent.exec(sandbox, "python3", "-c", (
        "import os\nfds = {}\nfor f in os.listdir('/proc/self/fd'):\n"
        "    try: fds[int(f)] = os.readlink('/proc/self/fd/' + f)\n"
        "    except OSError: pass\nprint(repr(fds))"))
    listing = eval(fds["stdout"])  # noqa: S307 - our own probe's repr
    # stdin /dev/null, stdout/stderr pipes; nothing else (listdir's own fd is closed by now).
    assert sorted(listing) == [0, 1, 2], listing
    assert listing[0] == "/dev/null" and listing[1].startswith("pipe:"), listing
    # CVE-2024-21626: a cwd through a leaked fd. Either refused, or inside the sandbox.
    for n in range(3, 10):
        r = await agent.client.post(f"/sandboxes/{sandbox}/exec",
                                    json={"cmd": "pwd", "cwd": f"/proc/self/fd/{n}"})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200 and r.json()["exitCode"] == 0:
            assert not r.json()["stdout"].startswith(str(agent.settings.data_dir))
    # CVE-2019-5736: the init and the runtime binary cannot be written from inside.
    init = await agent.exec(sandbox, "sh", "-c", "echo x >> /proc/1/exe", user="root")
    assert init["exitCode"] != 0
    runtime = await agent.exec(sandbox, "sh", "-c", "echo x >> /.qbox/init", user="root")
    assert runtime["exitCode"] != 0


async def test_ports_below_1024_and_icmp_sockets_work_for_the_user(agent: Agent,
                                                                    sandbox: str) -> None:
    out = await agent.exec(sandbox, "python3", "-c", (
        "import socket; s = socket.socket(); s.bind(('0.0.0.0', 80)); "
        "i = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print('ok')"))
    assert out["stdout"] == "ok\n", out
    raw = await agent.exec(sandbox, "python3", "-c",
                           "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)",
                           user="root")
    assert raw["exitCode"] != 0  # no CAP_NET_RAW over the host-owned network namespace


@pytest.fixture
async def small_pids_agent(data_dir: Path, test_rootfs: Path) -> AsyncIterator[Agent]:
    settings = AgentSettings(data_dir=data_dir, secret=SECRET, pids_limit=128,
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    app = create_app(settings, store=RootfsStore(test_rootfs))  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), client_for(app) as client:
        agent = Agent(app, client, settings)
        try:
            yield agent
        finally:
            for sandbox in (await client.get("/sandboxes")).json():
                await client.delete(f"/sandboxes/{sandbox['id']}")


async def test_fork_bomb_stops_at_the_pids_limit(small_pids_agent: Agent) -> None:
    agent = small_pids_agent
    bombed, other = await agent.create(), await agent.create()
    await _command(agent, bombed, ["bash", "-c", "b() { b | b & }; b; sleep 60"])
    pids_max = CGROUP_ROOT / "pids" / agent.cgroup_parent / bombed / "pids.max"
    deadline = time.monotonic() + 20
    events = pids_max.with_name("pids.events")
    while events.exists() and "max 0" in events.read_text():
        assert time.monotonic() < deadline, "the bomb never reached the limit"
        await asyncio.sleep(0.05)
    if pids_max.exists():
        assert int(pids_max.read_text()) == 128
        assert len(_cgroup_pids(bombed)) <= 128
    # The agent and another sandbox answer at once.
    started = time.monotonic()
    assert (await agent.exec(other, "true"))["exitCode"] == 0
    assert (await agent.client.get("/health")).status_code == 200
    # Even in the bombed sandbox an exec starts (joining a cgroup is not a fork).
    assert (await agent.exec(bombed, "true"))["exitCode"] == 0
    assert time.monotonic() - started < 1.0
    # Deleting the bombed sandbox takes every process with it.
    assert (await agent.client.delete(f"/sandboxes/{bombed}")).status_code == 204
    assert _cgroup_pids(bombed) == set()
    assert (await agent.exec(other, "true"))["exitCode"] == 0
