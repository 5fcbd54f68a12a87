"""Density: how many idle sandboxes one host holds while the API stays responsive.

    .venv/bin/python bench/bench_density.py --max 500 --step 50      # root; starts a throw-away qbox up
    .venv/bin/python bench/bench_density.py --template tpl_python-gvisor --max 100 --step 20

Spawns idle sandboxes in steps; after each step measures the API's latency
(`GET /v1/sandboxes/{id}` and `POST …/exec true` on a random live sandbox,
`--probes` each) and the host's used memory. Stops at `--max`, when a spawn
fails, or when the p99 of either probe passes `--p99-limit-ms`. Kills
everything at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import percentile  # noqa: E402


def used_memory_mb() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def probe(api: httpx.Client, ids: list[str], n: int) -> tuple[float, float]:
    gets, execs = [], []
    for _ in range(n):
        sandbox_id = random.choice(ids)
        started = time.perf_counter()
        api.get(f"/v1/sandboxes/{sandbox_id}").raise_for_status()
        gets.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "true"}).raise_for_status()
        execs.append((time.perf_counter() - started) * 1000)
    return percentile(gets, 99), percentile(execs, 99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--api-key")
    parser.add_argument("--template", default="tpl_python")
    parser.add_argument("--max", type=int, default=500)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--probes", type=int, default=50)
    # Each sandbox's disk reservation: admission never lets them add up past the free space.
    parser.add_argument("--disk-mb", type=int, default=128)
    parser.add_argument("--p99-limit-ms", type=float, default=100.0)
    args = parser.parse_args()

    owned = None
    if args.base_url:
        base_url, api_key = args.base_url, args.api_key
    else:
        from tests.qbox_process import running_qbox

        os.environ["QBOX_RATE_LIMIT_SPAWNS_PER_SECOND"] = "0"
        os.environ["QBOX_RATE_LIMIT_REQUESTS_PER_SECOND"] = "0"
        # Idle sandboxes use a fraction of what they reserve: measure how many really fit,
        # not where admission control would stop them (it refuses past CPUs x 4, memory x 1).
        os.environ["QBOX_OVERCOMMIT_CPU"] = "1000"
        os.environ["QBOX_OVERCOMMIT_MEMORY"] = "100"
        workdir = Path(tempfile.mkdtemp(prefix="qbox-density-"))
        owned = running_qbox(workdir / "data", check_leaks=False)
        up = owned.__enter__()
        base_url, api_key = up.base_url, up.api_key

    ids: list[str] = []
    rows = []
    baseline = used_memory_mb()
    try:
        with httpx.Client(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {api_key}"}) as api:
            while len(ids) < args.max:
                for _ in range(min(args.step, args.max - len(ids))):
                    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                                 json={"templateId": args.template, "timeoutSeconds": 0,
                                       "diskSizeMb": args.disk_mb})
                    body = r.json()
                    if r.status_code != 201 or body.get("status") != "running":
                        print(f"spawn {len(ids) + 1} failed: {r.status_code} {body}")
                        raise StopIteration
                    ids.append(body["id"])
                time.sleep(1)  # let the new sandboxes settle to idle
                get_p99, exec_p99 = probe(api, ids, args.probes)
                per_sandbox = (used_memory_mb() - baseline) / len(ids)
                rows.append((len(ids), get_p99, exec_p99, per_sandbox))
                print(f"{len(ids):4d} sandboxes  GET p99 {get_p99:6.1f} ms  exec p99 {exec_p99:6.1f} ms  "
                      f"≈{per_sandbox:5.2f} MB host memory each", flush=True)
                if max(get_p99, exec_p99) > args.p99_limit_ms:
                    print(f"p99 over {args.p99_limit_ms} ms: stopping")
                    break
    except StopIteration:
        pass
    finally:
        with httpx.Client(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {api_key}"}) as api:
            for sandbox_id in ids:
                api.delete(f"/v1/sandboxes/{sandbox_id}")
        if owned is not None:
            owned.__exit__(None, None, None)
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n| idle sandboxes | GET p99 ms | exec `true` p99 ms | host memory per sandbox MB |")
    print("|---:|---:|---:|---:|")
    for count, get_p99, exec_p99, per in rows:
        print(f"| {count} | {get_p99:.1f} | {exec_p99:.1f} | {per:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
