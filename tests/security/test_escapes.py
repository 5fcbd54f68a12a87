"""Escape attempts: each asserts the host (and other sandboxes) are unharmed."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.qbox_process import QboxUp

pytestmark = pytest.mark.security


@pytest.fixture
def canary() -> Iterator[tuple[Path, str]]:
    secret = "canary-" + secrets.token_hex(8)
    path = Path("/tmp") / f"qbox-canary-{secrets.token_hex(4)}"
    path.write_text(secret)
    try:
        yield path, secret
    finally:
        path.unlink(missing_ok=True)


def test_host_files_unreachable_by_paths_links_and_proc(make_box: Any, canary: tuple[Path, str]) -> None:
    path, secret = canary
    box = make_box()
    attempts = [
        f"cat {path}",
        f"cat /..{path}",
        f"cat ../../../../../../..{path}",
        f"ln -s / /tmp/root && cat /tmp/root{path}",
        f"ln -s ../../../../../.. /tmp/up && cat /tmp/up{path}",
        f"for p in /proc/[0-9]*; do cat $p/root{path} 2>/dev/null; done",
        f"for fd in /proc/self/fd/*; do cat $fd{path} 2>/dev/null; done",
        f"cd /proc/1/root && cat .{path}",
        f"echo pwned > {path}; echo pwned > /proc/1/root{path}",
    ]
    for script in attempts:
        for user in (None, "root"):
            out = box.sh(script + " 2>&1; true", user=user)
            assert secret not in out["stdout"] + out["stderr"], script
    assert path.read_text() == secret  # never overwritten


def test_exec_cwd_tricks_resolve_inside(make_box: Any, canary: tuple[Path, str]) -> None:
    path, secret = canary
    box = make_box()
    for cwd in ("/proc/self/fd/0", "/proc/1/root/..", "../../../../..", "/proc/self/cwd/../../.."):
        r = box.api.post(f"/v1/sandboxes/{box.id}/exec",
                         json={"cmd": "cat", "args": [f".{path}", path.name], "cwd": cwd})
        assert r.status_code in (200, 400), r.text
        assert secret not in r.text


FORBIDDEN_SYSCALLS = {  # name: x86_64 number
    "mount": 165, "umount2": 166, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248,
    "bpf": 321, "kexec_load": 246, "open_by_handle_at": 304, "perf_event_open": 298,
    "userfaultfd": 323, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "swapon": 167, "pivot_root": 155,
}


# gVisor implements these inside its own kernel (they never reach the host's): a no-op
# unshare(0) or a mount of its own tmpfs may succeed there, so they are checked under crun only.
EMULATED_BY_GVISOR = {"mount", "umount2", "unshare", "setns", "pivot_root"}


def test_forbidden_syscalls_fail_even_as_root(make_box: Any, runtime: str) -> None:
    box = make_box()
    calls = {k: v for k, v in FORBIDDEN_SYSCALLS.items() if runtime == "crun" or k not in EMULATED_BY_GVISOR}
    code = (
        "import ctypes, errno, json\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"calls = {calls!r}\n"
        "out = {}\n"
        "for name, nr in calls.items():\n"
        "    ctypes.set_errno(0)\n"
        "    rc = libc.syscall(nr, 0, 0, 0, 0, 0, 0)\n"
        "    out[name] = (rc, errno.errorcode.get(ctypes.get_errno(), ''))\n"
        "print(json.dumps(out))\n"
    )
    import json

    result = json.loads(box.py(code, user="root")["stdout"])
    assert set(result) == set(calls)
    for name, (rc, err) in result.items():
        assert rc == -1, (name, rc, err)
        if runtime == "crun":  # the seccomp filter's answer; gVisor's kernel answers in its own words
            assert err in ("EPERM", "ENOSYS"), (name, err)
    if runtime == "crun":
        # The shell-level view. (gVisor gives namespaces of its own kernel, which never reach the host's.)
        out = box.sh("unshare -r true; mount -t tmpfs none /mnt", user="root")
        assert out["exitCode"] != 0


def _status_fields(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_host_view_of_the_sandbox_init(make_box: Any) -> None:
    """crun: the sandbox's init; runsc: gVisor's sentry, the host process that runs the sandbox."""
    box = make_box()
    status = _status_fields(box.host_pid())
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    uid = int(status["Uid"].split()[0])
    assert uid >= 100000, "root in the sandbox must not be root on the host"
    # A command as the sandbox user holds no capabilities at all.
    out = box.sh("grep CapEff /proc/self/status")
    assert out["stdout"].split()[-1] == "0000000000000000"


def test_only_the_usual_devices(make_box: Any) -> None:
    box = make_box()
    out = box.sh("ls /dev", user="root")
    names = set(out["stdout"].split())
    assert {"null", "zero", "urandom"} <= names
    assert not names & {"kvm", "mem", "kmsg", "sda", "vda", "port"}


def test_fork_bomb_is_contained_and_the_api_still_answers(make_box: Any, qbox_sec: QboxUp) -> None:
    bomber = make_box()
    neighbour = make_box()
    r = bomber.api.post(f"/v1/sandboxes/{bomber.id}/commands",
                        json={"cmd": "/bin/sh", "args": ["-c", "b() { b | b & }; b"]})
    assert r.status_code == 201
    time.sleep(2)
    started = time.monotonic()
    assert httpx.get(f"{qbox_sec.base_url}/healthz", timeout=5).status_code == 200
    out = neighbour.sh("echo alive")
    assert out["stdout"] == "alive\n"
    assert time.monotonic() - started < 1.0 * 5  # generous on 2 shared cores; the bound is "answers"


def test_memory_hog_is_oom_killed_alone(make_box: Any, runtime: str) -> None:
    hog = make_box(memoryMb=128)
    neighbour = make_box()
    r = hog.api.post(f"/v1/sandboxes/{hog.id}/exec", timeout=90, json={
        "cmd": "python3", "args": ["-c", "x = bytearray(512 * 1024 * 1024); print('survived')"],
        "timeoutSeconds": 60})
    assert "survived" not in r.text
    if runtime == "crun":
        # Only the hog process dies; the sandbox goes on.
        assert r.status_code == 200 and r.json()["exitCode"] != 0, r.text
        assert hog.sh("echo still here")["stdout"] == "still here\n"
    else:
        # gVisor's kernel is one process in the memory cgroup: the whole sandbox goes, and
        # both the exec and the sandbox say why in plain words (never gVisor's own).
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "sandbox_not_active", error
        assert error["details"]["reason"].startswith("out of memory"), error
        assert not any(word in r.text.lower() for word in ("urpc", "gvisor", "runsc", "sentry"))
        deadline = time.monotonic() + 15
        while (info := hog.api.get(f"/v1/sandboxes/{hog.id}").json())["status"] == "running":
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
        assert info["status"] == "failed", info
        assert info["endReason"] == ("failed: out of memory: the sandbox used all of its memory "
                                     "and was stopped"), info
        logs = hog.api.get(f"/v1/sandboxes/{hog.id}/logs").json()
        assert logs[-1]["message"] == info["endReason"], logs
        # (The template's name says gvisor, the runtime's own words never appear.)
        assert not any(word in str(logs).lower() for word in ("urpc", "containermanager", "fatal")), logs
    assert neighbour.sh("echo fine")["stdout"] == "fine\n"


def test_disk_fill_stops_at_the_quota(make_box: Any) -> None:
    box = make_box(diskSizeMb=128)
    before = shutil.disk_usage("/").free
    out = box.sh("dd if=/dev/zero of=/home/user/fill bs=1M count=1024 2>&1; df -m /home/user", timeout=120)
    assert "No space left" in out["stdout"], out
    written = int(box.sh("du -sm /home/user/fill | cut -f1")["stdout"])
    assert written <= 128
    box.sh("rm -f /home/user/fill")
    after = shutil.disk_usage("/").free
    assert abs(after - before) < 256 * 1024 * 1024


def test_kill_all_inside_leaves_other_sandboxes_alone(make_box: Any) -> None:
    victim = make_box()
    attacker = make_box()
    pid = victim.api.post(f"/v1/sandboxes/{victim.id}/commands",
                          json={"cmd": "sleep", "args": ["300"]}).json()["pid"]
    attacker.sh("kill -9 -1", user="root")
    status = victim.api.get(f"/v1/sandboxes/{victim.id}/commands/{pid}").json()
    assert status["alive"] is True
    assert victim.sh("echo ok")["stdout"] == "ok\n"


def test_sandboxes_cannot_see_each_other(make_box: Any) -> None:
    a = make_box()
    b = make_box()
    marker = "marker" + secrets.token_hex(6)
    duration = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**4)}"
    a.sh(f"echo {marker} > /tmp/{marker}")
    a.api.post(f"/v1/sandboxes/{a.id}/commands", json={"cmd": "sleep", "args": [duration]})
    # b looks with the names in its environment, so its own command line does not contain them.
    r = b.api.post(f"/v1/sandboxes/{b.id}/exec", json={
        "cmd": "/bin/sh", "user": "root", "env": {"M": marker, "D": duration},
        "args": ["-c", 'ps -eo args | grep -v grep | grep -c -- "$D"; ls /tmp; find / -name "$M" -xdev 2>/dev/null; '
                 'true']})
    out = r.json()["stdout"]
    lines = out.splitlines()
    # Not counting the greps: whether ps lists them depends on when they start (gVisor: often not).
    assert lines[0] == "0", out
    assert marker not in out


class Listener:
    """A TCP listener on the host that records whether anything connected."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def _connect_script(host: str, port: int) -> str:
    return (
        "import socket\n"
        "s = socket.socket(); s.settimeout(2)\n"
        f"try:\n    s.connect(({host!r}, {port})); print('CONNECTED')\n"
        "except OSError as e:\n    print('refused', e)\n"
    )


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


def test_host_loopback_and_host_addresses_unreachable(make_box: Any) -> None:
    listener = Listener("0.0.0.0")
    try:
        box = make_box()
        for address in ["127.0.0.1", *_host_addresses()]:
            out = box.py(_connect_script(address, listener.port))
            assert "CONNECTED" not in out["stdout"], address
        assert listener.connections == 0
    finally:
        listener.close()


def test_control_plane_and_agent_unreachable(make_box: Any, qbox_sec: QboxUp) -> None:
    box = make_box()
    for address in ["127.0.0.1", *_host_addresses()]:
        out = box.py(_connect_script(address, qbox_sec.port))
        assert "CONNECTED" not in out["stdout"], address
    out = box.sh(f"ls -la {qbox_sec.data_dir} 2>&1; ls /var/lib/qbox 2>&1", user="root")
    assert "agent.sock" not in out["stdout"]


@pytest.fixture
def metadata_service() -> Iterator[tuple[str, Any]]:
    """A fake cloud metadata service on 169.254.169.254, in a network namespace of this test."""
    name = "qbox-sec-meta-" + secrets.token_hex(3)
    host_if, ns_if = "qsm" + secrets.token_hex(3), "qsmn" + secrets.token_hex(2)
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", name)
    server = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", name)
        run("ip", "addr", "add", "169.254.169.1/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "netns", "exec", name, "ip", "addr", "add", "169.254.169.2/30", "dev", ns_if)
        run("ip", "netns", "exec", name, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
        run("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up")
        run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        run("ip", "netns", "exec", name, "ip", "route", "add", "default", "via", "169.254.169.1")
        run("ip", "route", "add", "169.254.169.254/32", "via", "169.254.169.2")
        hits = Path(tempfile_dir := os.environ.get("TMPDIR", "/tmp")) / f"{name}.hits"
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, "python3", "-c",
             "import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "s.bind(('169.254.169.254', 80)); s.listen(8)\n"
             f"while True:\n    c,_=s.accept(); open({str(hits)!r},'a').write('hit\\n'); c.close()\n"])
        time.sleep(0.3)
        yield "169.254.169.254", hits
        del tempfile_dir
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "route", "del", "169.254.169.254/32"], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_metadata_service_unreachable(make_box: Any, metadata_service: tuple[str, Any]) -> None:
    address, hits = metadata_service
    # The host itself reaches it: the stand-in works.
    with socket.create_connection((address, 80), timeout=2):
        pass
    time.sleep(0.2)
    host_hits = hits.read_text().count("hit") if hits.exists() else 0
    assert host_hits == 1
    box = make_box()
    out = box.py(_connect_script(address, 80))
    assert "CONNECTED" not in out["stdout"]
    time.sleep(0.2)
    assert hits.read_text().count("hit") == host_hits
