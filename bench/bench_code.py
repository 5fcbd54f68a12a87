"""Code interpreter latency through the HTTP API, on a real `qbox up`.

    .venv/bin/python bench/bench_code.py                 # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_code.py --base-url http://127.0.0.1:8080 --api-key qbox_…

Measures: the warm `1+1` round trip (`POST …/code-execute`, unary, on the
default Python context, N runs), the same as SSE, and the first execution
on a freshly spawned sandbox (spawn with wait=true, then at once `1+1`;
the kernel was started at boot and may still be starting), M runs. Reports
p50/p90/p99 in ms. Targets: warm p50 ≤ 15 ms, first ≤ 1 s.
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import percentile, timed  # noqa: E402


def spawn(api: httpx.Client, template: str) -> str:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                 json={"templateId": template, "timeoutSeconds": 600})
    r.raise_for_status()
    body = r.json()
    if body["status"] != "running":
        raise RuntimeError(f"spawn ended {body['status']}")
    return str(body["id"])


def execute(api: httpx.Client, sandbox_id: str, *, stream: bool = False) -> None:
    body = {"code": "1+1", "language": "python", "stream": stream}
    if stream:
        with api.stream("POST", f"/v1/sandboxes/{sandbox_id}/code-execute", json=body,
                        headers={"Accept": "text/event-stream"}) as r:
            r.raise_for_status()
            text = r.read().decode()
        if "event: complete" not in text or "event: error" in text:
            raise RuntimeError(text)
        return
    r = api.post(f"/v1/sandboxes/{sandbox_id}/code-execute", json=body)
    r.raise_for_status()
    answer = r.json()
    if answer["error"] is not None or answer["result"] is None:
        raise RuntimeError(r.text)


def run(api: httpx.Client, runs: int, first_runs: int, template: str) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    sandbox_id = spawn(api, template)
    try:
        results["warm `1+1` (unary)"] = timed(lambda: execute(api, sandbox_id), runs)
        results["warm `1+1` (SSE)"] = timed(lambda: execute(api, sandbox_id, stream=True), runs)
    finally:
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    firsts, spawn_and_first = [], []
    for _ in range(first_runs):
        started = time.perf_counter()
        fresh = spawn(api, template)
        spawned = time.perf_counter()
        try:
            execute(api, fresh)
            done = time.perf_counter()
        finally:
            api.delete(f"/v1/sandboxes/{fresh}")
        firsts.append((done - spawned) * 1000)
        spawn_and_first.append((done - started) * 1000)
    results["first `1+1` after spawn"] = firsts
    results["spawn + first `1+1`"] = spawn_and_first
    return results


def render(results: dict[str, list[float]]) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}), "
        "through the HTTP API of `qbox up` (crun), client on loopback:",
        "",
        "| operation | runs | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, samples in results.items():
        lines.append(f"| {name} | {len(samples)} | {percentile(samples, 50):.1f} | "
                     f"{percentile(samples, 90):.1f} | {percentile(samples, 99):.1f} | "
                     f"{statistics.fmean(samples):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--api-key")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--first-runs", type=int, default=10)
    parser.add_argument("--template", default="tpl_python")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    owned = None
    if args.base_url:
        base_url, api_key = args.base_url, args.api_key
    else:
        from tests.qbox_process import running_qbox

        # The benchmark's requests would trip the default per-key rate limit.
        os.environ.setdefault("QBOX_RATE_LIMIT_REQUESTS_PER_SECOND", "0")
        workdir = Path(tempfile.mkdtemp(prefix="qbox-bench-"))
        owned = running_qbox(workdir / "data")
        up = owned.__enter__()
        base_url, api_key = up.base_url, up.api_key
    try:
        with httpx.Client(base_url=base_url, timeout=120,
                          headers={"Authorization": f"Bearer {api_key}"}) as api:
            results = run(api, args.runs, args.first_runs, args.template)
    finally:
        if owned is not None:
            owned.__exit__(None, None, None)
            shutil.rmtree(workdir, ignore_errors=True)
    table = render(results)
    print(table)
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
