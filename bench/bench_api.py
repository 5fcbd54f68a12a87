"""Latency of the hot paths through the HTTP API, on a real `qbox up`.

    .venv/bin/python bench/bench_api.py                 # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_api.py --base-url http://127.0.0.1:8080 --api-key qbox_…
    .venv/bin/python bench/bench_api.py --runs 50 --markdown docs/benchmarks.md

Measures, N runs each: spawn to running (`POST /v1/sandboxes?wait=true`),
exec `true`, exec `python3 -c 'print(1+1)'`. Reports p50/p90/p99 in ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def timed(fn: Callable[[], None], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run(api: httpx.Client, runs: int, template: str) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    spawned: list[str] = []

    def spawn() -> None:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": template, "timeoutSeconds": 600})
        r.raise_for_status()
        body = r.json()
        if body["status"] != "running":
            raise RuntimeError(f"spawn ended {body['status']}: {body.get('endReason')}")
        spawned.append(body["id"])

    def cleanup() -> None:
        while spawned:
            api.delete(f"/v1/sandboxes/{spawned.pop()}")

    try:
        # Sandboxes are deleted between runs so the host holds one at a time,
        # as when agents spawn, use and drop them.
        samples = []
        for i in range(runs + 3):
            started = time.perf_counter()
            spawn()
            elapsed = (time.perf_counter() - started) * 1000
            if i >= 3:
                samples.append(elapsed)
            cleanup()
        results["spawn → running (wait=true)"] = samples

        spawn()
        sandbox_id = spawned[0]

        def exec_(cmd: str, *args: str) -> Callable[[], None]:
            def call() -> None:
                r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": cmd, "args": list(args)})
                r.raise_for_status()
                if r.json()["exitCode"] != 0:
                    raise RuntimeError(r.text)
            return call

        results["exec `true`"] = timed(exec_("true"), runs)
        results["exec `python3 -c 'print(1+1)'`"] = timed(exec_("python3", "-c", "print(1+1)"), runs)
    finally:
        cleanup()
    return results


def render(results: dict[str, list[float]], runs: int) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}), "
        f"{runs} runs each, through the HTTP API of `qbox up` (crun):",
        "",
        "| operation | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, samples in results.items():
        lines.append(f"| {name} | {percentile(samples, 50):.1f} | {percentile(samples, 90):.1f} | "
                     f"{percentile(samples, 99):.1f} | {statistics.fmean(samples):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--api-key")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--template", default="tpl_python")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    owned = None
    if args.base_url:
        base_url, api_key = args.base_url, args.api_key
    else:
        from tests.qbox_process import running_qbox

        workdir = Path(tempfile.mkdtemp(prefix="qbox-bench-"))
        owned = running_qbox(workdir / "data")
        up = owned.__enter__()
        base_url, api_key = up.base_url, up.api_key
    try:
        with httpx.Client(base_url=base_url, timeout=120,
                          headers={"Authorization": f"Bearer {api_key}"}) as api:
            results = run(api, args.runs, args.template)
    finally:
        if owned is not None:
            owned.__exit__(None, None, None)
            shutil.rmtree(workdir, ignore_errors=True)
    table = render(results, args.runs)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
