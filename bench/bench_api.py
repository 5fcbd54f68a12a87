"""Latency of the hot paths through the HTTP API, on a real `qbox up`.

    .venv/bin/python bench/bench_api.py                 # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_api.py --base-url http://127.0.0.1:8080 --api-key qbox_…
    .venv/bin/python bench/bench_api.py --runs 50 --markdown docs/benchmarks.md

Measures, N runs each: spawn to running (`POST /v1/sandboxes?wait=true`),
exec `true`, exec `python3 -c 'print(1+1)'` (in a sandbox given `--settle`
seconds to finish starting first). Reports p50/p90/p99 in ms.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import httpx

from harness import add_common_args, api_client, latency_table, measure_floor, publish, qbox_endpoint, spawn, timed


AGAINST = {"spawn → running (wait=true)": "run", "exec `true`": "exec"}


def run(api: httpx.Client, runs: int, template: str, settle: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    # Sandboxes are deleted between runs so the host holds one at a time,
    # as when agents spawn, use and drop them.
    samples = []
    for i in range(runs + 3):
        started = time.perf_counter()
        sandbox_id = spawn(api, template)
        elapsed = (time.perf_counter() - started) * 1000
        api.delete(f"/v1/sandboxes/{sandbox_id}")
        if i >= 3:
            samples.append(elapsed)
    results["spawn → running (wait=true)"] = samples

    sandbox_id = spawn(api, template)
    # A sandbox whose kernel starts at boot (codeInterpreter eager) spends about 1 s of
    # CPU on it: measured alongside, exec would time the two sharing the cores, not exec.
    time.sleep(settle)
    try:
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
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds a new sandbox may finish starting before exec is timed")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.settle = 5, 1.0
    floor = measure_floor(args.quick)
    with qbox_endpoint(args) as endpoint, api_client(endpoint) as api:
        results = run(api, args.runs, args.template, args.settle)
    publish(latency_table(results, f"through the HTTP API of `qbox up` (crun, {args.template}), client on loopback",
                          floor, against=AGAINST), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
