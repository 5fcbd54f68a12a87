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
import time

import httpx

from harness import add_common_args, api_client, latency_table, publish, qbox_endpoint, sandbox, spawn, timed


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
    with sandbox(api, template) as sandbox_id:
        results["warm `1+1` (unary)"] = timed(lambda: execute(api, sandbox_id), runs)
        results["warm `1+1` (SSE)"] = timed(lambda: execute(api, sandbox_id, stream=True), runs)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--first-runs", type=int, default=10)
    args = parser.parse_args()
    with qbox_endpoint(args) as endpoint, api_client(endpoint) as api:
        results = run(api, args.runs, args.first_runs, args.template)
    publish(latency_table(results, "through the HTTP API of `qbox up` (crun), client on loopback"),
            args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
