"""Files API latency and throughput through the HTTP API, on a real `qbox up`.

    .venv/bin/python bench/bench_files.py                 # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_files.py --base-url http://127.0.0.1:8080 --api-key qbox_…
    .venv/bin/python bench/bench_files.py --runs 200 --big-mb 1024 --markdown docs/benchmarks-files.md

Measures, in one sandbox (diskSizeMb 1300): 1 KB write (`PUT …/file`) and
1 KB read (`GET …/download`) latency, N runs each, p50/p90/p99 in ms; 1 MiB
upload and download, N/10 runs, the median as MB/s; a 1 GiB upload streamed
from a generator with a Content-Length, and its download read with
`iter_raw`, 3 runs, as MB/s (MB = 10^6 bytes), the first run shown apart.
Contents are random, so nothing on the way can compress them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator

import httpx

from harness import (
    add_common_args,
    api_client,
    floor_table,
    latency_table,
    measure_floor,
    publish,
    qbox_endpoint,
    rate_table,
    timed,
)

KB, MB, MIB = 1024, 1024 * 1024, 1024 * 1024
CHUNK = 1 * MIB
PATH = "/home/user/bench"


class FilesBench:
    def __init__(self, api: httpx.Client, sandbox_id: str, pause: float) -> None:
        self.api, self.base, self.pause = api, f"/v1/sandboxes/{sandbox_id}", pause

    def _paced(self, fn: Callable[[], None]) -> Callable[[], None]:
        # Against a shared server the per-key request rate (100/s by default) applies:
        # the pause falls between samples, outside the timed call.
        def call() -> None:
            fn()
            if self.pause:
                time.sleep(self.pause)
        return call

    def write(self, path: str, content: bytes | Iterator[bytes], length: int) -> None:
        r = self.api.put(f"{self.base}/file", params={"path": path, "mode": "644"}, content=content,
                         headers={"Content-Length": str(length)}, timeout=600)
        r.raise_for_status()

    def read(self, path: str, expect: int) -> None:
        got = 0
        with self.api.stream("GET", f"{self.base}/download", params={"path": path}, timeout=600) as r:
            r.raise_for_status()
            for chunk in r.iter_raw(CHUNK):
                got += len(chunk)
        if got != expect:
            raise RuntimeError(f"read {got} bytes of {path}, expected {expect}")

    def latency(self, size: int, runs: int) -> dict[str, list[float]]:
        content = os.urandom(size)
        path = f"{PATH}/small"
        write = self._paced(lambda: self.write(path, content, size))
        read = self._paced(lambda: self.read(path, size))
        return {f"write {size // KB} KB": timed(write, runs), f"read {size // KB} KB": timed(read, runs)}

    def throughput(self, size: int, runs: int) -> dict[str, float]:
        """MB/s of ``runs`` uploads and downloads of ``size`` random bytes: the median, and the
        first on its own (a fresh sandbox disk is a sparse image the host still has to allocate)."""
        block = os.urandom(min(size, CHUNK))
        path = f"{PATH}/big-{size}"

        def chunks() -> Iterator[bytes]:
            left = size
            while left > 0:
                yield block[:min(left, len(block))]
                left -= len(block)

        up, down = [], []
        for _ in range(runs):
            started = time.perf_counter()
            self.write(path, chunks(), size)
            up.append(size / 1e6 / (time.perf_counter() - started))
            started = time.perf_counter()
            self.read(path, size)
            down.append(size / 1e6 / (time.perf_counter() - started))
            # Replacing a file needs room for both until the rename: start each run from none.
            self.api.delete(f"{self.base}/file", params={"path": path}).raise_for_status()
            if self.pause:
                time.sleep(self.pause)
        label = f"{size // MIB} MiB" if size >= MIB else f"{size // KB} KB"
        rates = {f"upload {label}, median of {runs}": statistics.median(up),
                 f"download {label}, median of {runs}": statistics.median(down)}
        if size > 100 * MIB:
            rates |= {f"upload {label}, first": up[0], f"download {label}, first": down[0]}
        return rates


def run(api: httpx.Client, runs: int, big_mb: int, big_runs: int, template: str, pause: float
        ) -> tuple[dict[str, list[float]], dict[str, float]]:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                 json={"templateId": template, "timeoutSeconds": 1800, "diskSizeMb": big_mb + 276})
    r.raise_for_status()
    sandbox = r.json()
    if sandbox["status"] != "running":
        raise RuntimeError(f"spawn ended {sandbox['status']}: {sandbox.get('endReason')}")
    try:
        bench = FilesBench(api, sandbox["id"], pause)
        latencies = bench.latency(1 * KB, runs)
        rates = bench.throughput(1 * MB, max(3, runs // 10))
        if big_mb:
            rates |= bench.throughput(big_mb * MIB, big_runs)
    finally:
        api.delete(f"/v1/sandboxes/{sandbox['id']}")
    return latencies, rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the big transfer in MiB (0: skip)")
    parser.add_argument("--big-runs", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.big_mb, args.big_runs = 20, 64, 1
    floor = measure_floor(args.quick)
    with qbox_endpoint(args) as endpoint, api_client(endpoint) as api:
        # Against a shared server the per-key request rate (100/s by default) applies.
        pause = 0.0 if endpoint.owned else 1 / 80
        latencies, rates = run(api, args.runs, args.big_mb, args.big_runs, args.template, pause)
    what = "through the HTTP API of `qbox up` (crun), client on loopback"
    publish(latency_table(latencies, what) + "\n" + rate_table(rates) + "\n" + floor_table(floor), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
