"""Issue 13, finding 7, end to end on a real `qbox up` (crun): command output is spooled
to the sandbox's own disk, not kept in the agent's memory, and log reads stream.

Before the fix, 20 background commands writing 16 MiB to stdout and to stderr took
the agent from 203 to 787 MB (and it stayed there after they were killed), and 8
concurrent reads of a 16 MiB log took the control plane from 126 to 516 MB.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.procstat import agent_pid, rss_mb
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration

COMMANDS = 20
MIB16 = 16 * 1024 * 1024
READERS = 8
# Writes 16 MiB to stdout and 16 MiB to stderr, then waits to be killed.
WRITER = f"head -c {MIB16} /dev/zero | tr '\\0' o; head -c {MIB16} /dev/zero | tr '\\0' e >&2; " \
         "exec sleep 1000"


class PeakRss:
    """The highest RSS of ``pid`` while in the block (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_mb(pid), threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _used_kib(api: httpx.Client, sandbox_id: str) -> int:
    """The space used on the sandbox's disk, as the sandbox sees it (df of its root)."""
    r = api.post(f"/v1/sandboxes/{sandbox_id}/exec",
                 json={"cmd": "sh", "args": ["-c", "df -Pk / | tail -1"]})
    assert r.status_code == 200, r.text
    return int(r.json()["stdout"].split()[2])


def _written(api: httpx.Client, base: str, pid: int) -> bool:
    # From offset 16 Mi on: nothing to carry, only where the text ends.
    r = api.get(f"{base}/commands/{pid}/logs", params={"offset": MIB16})
    body = r.json()
    return bool(body["stdoutNext"] >= MIB16 and body["stderrNext"] >= MIB16)


def _wait_written(api: httpx.Client, base: str, pids: list[int], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if not _written(api, base, pid)]
        time.sleep(0.5)
    assert not pending, f"{len(pending)} commands did not write their output in time"


def test_output_goes_to_the_sandbox_disk_not_agent_memory_and_reads_stream(
        qbox: QboxUp, api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}"
    agent = agent_pid(qbox)
    # Warm up the paths measured below, so their code and buffers are in the baseline.
    r = api.post(f"{base}/commands", json={"cmd": "sh", "args": ["-c", "echo warm"]})
    time.sleep(0.5)
    api.get(f"{base}/commands/{r.json()['pid']}/logs")
    disk_before = _used_kib(api, sandbox["id"])
    agent_before = rss_mb(agent)
    pids: list[int] = []
    try:
        with PeakRss(agent) as agent_peak:
            for _ in range(COMMANDS):
                r = api.post(f"{base}/commands", json={"cmd": "sh", "args": ["-c", WRITER]})
                assert r.status_code == 201, r.text
                pids.append(r.json()["pid"])
            _wait_written(api, base, pids)
        growth = agent_peak.peak - agent_before
        disk_growth_mib = (_used_kib(api, sandbox["id"]) - disk_before) / 1024
        print(f"agent RSS {agent_before:.0f} MB -> peak {agent_peak.peak:.0f} MB "
              f"(+{growth:.0f} MB) for {COMMANDS} x 2 x 16 MiB of output; "
              f"the sandbox's disk +{disk_growth_mib:.0f} MiB")
        assert growth < 50
        # The output is on the sandbox's own disk (counted against its quota).
        assert disk_growth_mib >= 0.9 * COMMANDS * 32

        # 8 concurrent reads of a 16 MiB (+16 MiB) log, streamed through the control plane.
        control = qbox.process.pid
        control_before = rss_mb(control)

        def read_all(pid: int) -> tuple[int, bytes, bytes]:
            size, head, tail = 0, b"", b""
            with qbox.client() as client, client.stream("GET", f"{base}/commands/{pid}/logs") as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    head = (head + chunk)[:20] if len(head) < 20 else head
                    tail = (tail + chunk)[-20:]
                    size += len(chunk)
            return size, head, tail

        listing: list[float] = []

        def list_while_reading() -> None:
            with qbox.client() as client:
                for _ in range(5):
                    started = time.monotonic()
                    assert client.get(f"{base}/commands").status_code == 200
                    listing.append(time.monotonic() - started)

        with PeakRss(control) as control_peak, ThreadPoolExecutor(READERS + 1) as pool:
            reads = [pool.submit(read_all, pids[i]) for i in range(READERS)]
            pool.submit(list_while_reading).result()
            results = [read.result() for read in reads]
        control_growth = control_peak.peak - control_before
        print(f"control plane RSS {control_before:.0f} MB -> peak {control_peak.peak:.0f} MB "
              f"(+{control_growth:.0f} MB) for {READERS} concurrent reads of 2 x 16 MiB; "
              f"listing meanwhile took {max(listing):.3f} s at most")
        for size, head, tail in results:
            assert size == len('{"stdout":"","stderr":""}') + 2 * MIB16
            assert head.startswith(b'{"stdout":"ooo') and tail.endswith(b'eee"}')
        assert control_growth < 64

        # Killed and reaped: the agent's memory stays where it was, the disk comes back.
        for pid in pids:
            api.delete(f"{base}/commands/{pid}", params={"signal": 9})
        time.sleep(2)
        after = rss_mb(agent)
        disk_after_mib = (_used_kib(api, sandbox["id"]) - disk_before) / 1024
        print(f"after the kill: agent RSS {after:.0f} MB, the sandbox's disk "
              f"+{disk_after_mib:.0f} MiB (finished records keep at most 64 MiB)")
        assert after - agent_before < 50
        assert disk_after_mib <= 64 + 8
    finally:
        for pid in pids:
            api.delete(f"{base}/commands/{pid}", params={"signal": 9})
