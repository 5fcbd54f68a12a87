"""The files API against a real `qbox up`: crun, overlayfs, the sandbox user's identity."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_sandboxes_e2e import exec_
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def put(api: httpx.Client, sb: dict, path: str, data: bytes | Iterator[bytes] = b"",  # type: ignore[type-arg]
        **params: str) -> httpx.Response:
    return api.put(f"/v1/sandboxes/{sb['id']}/file", params={"path": path, "mode": "644", **params},
                   content=data)


def sh(api: httpx.Client, sb: dict, script: str, user: str | None = None) -> str:  # type: ignore[type-arg]
    extra = {"user": user} if user else {}
    result = exec_(api, sb, "sh", "-c", script, **extra)
    assert result["exitCode"] == 0, result
    return str(result["stdout"])


def test_written_files_are_the_users_and_seen_inside(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    assert put(api, sandbox, "project/main.py", b"print(6 * 7)\n", mode="755").status_code == 204
    assert sh(api, sandbox, "python3 project/main.py") == "42\n"
    assert sh(api, sandbox, "stat -c '%U:%G %a' project/main.py project") == \
        "user:user 755\nuser:user 755\n"
    sh(api, sandbox, "printf 'from inside' > /tmp/inside.txt")
    r = api.get(f"/v1/sandboxes/{sandbox['id']}/download", params={"path": "/tmp/inside.txt"})
    assert r.status_code == 200 and r.content == b"from inside"


def test_the_users_permissions_apply(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    sid = sandbox["id"]
    r = put(api, sandbox, "/etc/qbox-test", b"x")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = put(api, sandbox, "/etc/hostname", b"taken over")
    assert r.status_code == 403, r.text
    sh(api, sandbox, "echo private > /home/user/secret && chmod 000 /home/user/secret")
    r = api.get(f"/v1/sandboxes/{sid}/download", params={"path": "/home/user/secret"})
    assert r.status_code == 403
    # root of the sandbox (our `user` extension) may.
    assert put(api, sandbox, "/etc/qbox-test", b"x", user="root").status_code == 204
    assert sh(api, sandbox, "stat -c %U /etc/qbox-test") == "root\n"
    r = api.get(f"/v1/sandboxes/{sid}/download", params={"path": "/home/user/secret", "user": "root"})
    assert r.content == b"private\n"


def test_listing_stat_mkdir_rename_remove(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    sid = sandbox["id"]
    sh(api, sandbox, "mkdir -p /tmp/w/sub && echo hi > /tmp/w/f && ln -s /tmp/w/sub /tmp/w/l")
    listing = {e["name"]: e for e in api.get(f"/v1/sandboxes/{sid}/files", params={"path": "/tmp/w"}).json()}
    assert set(listing) == {"sub", "f", "l"}
    assert listing["sub"]["isDir"] and not listing["l"]["isDir"] and listing["f"]["size"] == 3
    stat = api.get(f"/v1/sandboxes/{sid}/stat", params={"path": "/tmp/w/l"}).json()
    assert stat["isSymlink"] and stat["symlinkTarget"] == "/tmp/w/sub"
    r = api.post(f"/v1/sandboxes/{sid}/files/mkdir", json={"path": "/tmp/w/a/b", "mode": 448, "parents": True})
    assert r.status_code == 204
    assert sh(api, sandbox, "stat -c '%U %a' /tmp/w/a/b") == "user 700\n"
    r = api.post(f"/v1/sandboxes/{sid}/files/rename", json={"src": "/tmp/w/f", "dst": "/tmp/w/a/g"})
    assert r.status_code == 204 and sh(api, sandbox, "cat /tmp/w/a/g") == "hi\n"
    assert api.delete(f"/v1/sandboxes/{sid}/file", params={"path": "/tmp/w"}).status_code == 409
    r = api.delete(f"/v1/sandboxes/{sid}/file", params={"path": "/tmp/w", "recursive": "true"})
    assert r.status_code == 204 and sh(api, sandbox, "test -e /tmp/w || echo gone") == "gone\n"


def test_a_full_disk_is_507_and_leaves_nothing(api: httpx.Client) -> None:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python",
                                                                   "diskSizeMb": 64})
    assert r.status_code == 201, r.text
    sb = r.json()
    try:
        r = put(api, sb, "/home/user/big.bin", iter([b"\0" * MiB] * 100))
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
        assert sh(api, sb, "ls -A /home/user | grep -c qbox-tmp || true") == "0\n"
        assert put(api, sb, "/home/user/small.txt", b"still fine").status_code == 204
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_symlinks_planted_inside_resolve_inside(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    sid = sandbox["id"]
    sh(api, sandbox, "ln -s / /tmp/rootlink && ln -s ../../../../../etc /tmp/up")
    hostname = sh(api, sandbox, "cat /etc/hostname")
    for path in ("/tmp/rootlink/etc/hostname", "/tmp/up/hostname"):
        r = api.get(f"/v1/sandboxes/{sid}/download", params={"path": path})
        assert r.status_code == 200 and r.text == hostname
    assert Path("/etc/hostname").read_text() != hostname or hostname.startswith(sid)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _agent_pid(up: QboxUp) -> int:
    children = Path(f"/proc/{up.process.pid}/task/{up.process.pid}/children").read_text().split()
    for child in children:
        if "agent" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
            return int(child)
    raise AssertionError(f"no agent among the children of qbox up: {children}")


class PeakRss:
    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.base = {pid: _rss_kib(pid) for pid in pids}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], _rss_kib(pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mib(self, pid: int) -> float:
        return (self.peak[pid] - self.base[pid]) / 1024


def test_one_gigabyte_streams_through_with_bounded_memory(qbox: QboxUp, api: httpx.Client) -> None:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python",
                                                                   "diskSizeMb": 1300})
    assert r.status_code == 201, r.text
    sb = r.json()
    size = 1024 * MiB
    block = os.urandom(MiB)
    try:
        agent = _agent_pid(qbox)
        with PeakRss(qbox.process.pid, agent) as rss:
            started = time.monotonic()
            r = api.put(f"/v1/sandboxes/{sb['id']}/file", params={"path": "/home/user/1g.bin", "mode": "644"},
                        content=(block for _ in range(size // MiB)), headers={"Content-Length": str(size)},
                        timeout=600)
            up_s = time.monotonic() - started
            assert r.status_code == 204, r.text
            received = 0
            started = time.monotonic()
            with api.stream("GET", f"/v1/sandboxes/{sb['id']}/download",
                            params={"path": "/home/user/1g.bin"}, timeout=600) as stream:
                assert stream.headers["content-length"] == str(size)
                for chunk in stream.iter_raw():
                    if received == 0:
                        assert chunk[:64] == block[:64]
                    received += len(chunk)
            down_s = time.monotonic() - started
        assert received == size
        print(f"\n1 GiB up {size / MiB / up_s:.0f} MiB/s, down {size / MiB / down_s:.0f} MiB/s; "
              f"RSS growth control plane {rss.growth_mib(qbox.process.pid):.1f} MiB, "
              f"agent {rss.growth_mib(agent):.1f} MiB")
        assert rss.growth_mib(qbox.process.pid) < 48
        assert rss.growth_mib(agent) < 48
        assert sh(api, sb, "stat -c %s /home/user/1g.bin") == f"{size}\n"
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_an_announced_upload_over_the_cap_is_refused(api: httpx.Client,
                                                     sandbox: dict) -> None:  # type: ignore[type-arg]
    too_big = 6 * 1024**3  # over the default QBOX_MAX_FILE_BYTES (5 GiB)
    block = b"\0" * MiB

    def body() -> Iterator[bytes]:
        # The answer comes before the body is read; the server discards the rest.
        for _ in range(too_big // MiB):
            yield block

    r = api.put(f"/v1/sandboxes/{sandbox['id']}/file", params={"path": "/tmp/huge", "mode": "644"},
                content=body(), headers={"Content-Length": str(too_big)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    stat = api.get(f"/v1/sandboxes/{sandbox['id']}/stat", params={"path": "/tmp/huge"}).json()
    assert stat["exists"] is False
