"""Code interpreter latency through the HTTP API, on a real `qbox up`: cold, warm and from a warm pool.

    .venv/bin/python bench/bench_code.py                 # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_code.py --base-url http://127.0.0.1:8080 --api-key qbox_…   (an admin's key)
    .venv/bin/python bench/bench_code.py --no-pool       # a server without warm pools

Measures, on the template (default `tpl_python`):

- warm `1+1`: ``POST …/code-execute`` (unary, then SSE) on the default Python
  context of a sandbox whose kernel already ran code, N runs;
- cold: spawn (``wait=true``), then at once `1+1` — the first
  code-interpreter call, which starts the kernel when the template's
  ``codeInterpreter`` is lazy (or waits for the one started at boot when it
  is eager) — M runs, each sandbox deleted before the next;
- from a warm pool (unless ``--no-pool``, or the server's templates have no
  ``warmPool``): the template's pool is set to ``--pool-size`` (``PATCH
  /v1/templates/{id}``, admin) and, each time it is full again, a spawn
  is timed to running and then its first `1+1`; M runs. A spawn that
  answers ``fromPool: false`` even so is left out of those rows and counted
  in a note. The pool is set back to its size before afterwards (the cold
  rows are measured with it emptied, should the server keep one).

Targets: warm p50 ≤ 10 ms, cold first `1+1` ≤ 1 s, from a pool spawn p50 ≤
10 ms and first `1+1` ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from harness import (
    add_common_args,
    api_client,
    latency_table,
    measure_floor,
    publish,
    qbox_endpoint,
    sandbox,
    timed,
)

COLD_SPAWN = "spawn → running (wait=true), cold"
POOL_SPAWN = "spawn → running (wait=true), from the warm pool"
AGAINST = {COLD_SPAWN: "run", POOL_SPAWN: "run"}


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


def spawn_then_first(api: httpx.Client, template: str) -> tuple[float, float, bool]:
    """ms to a running sandbox (wait=true), ms of its first `1+1`, and whether it came from
    the template's warm pool; the sandbox is deleted."""
    started = time.perf_counter()
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": template, "timeoutSeconds": 600})
    spawned = time.perf_counter()
    r.raise_for_status()
    body = r.json()
    try:
        if body["status"] != "running":
            raise RuntimeError(f"spawn ended {body['status']}: {body.get('endReason')}")
        execute(api, body["id"])
        done = time.perf_counter()
    finally:
        api.delete(f"/v1/sandboxes/{body['id']}")
    return (spawned - started) * 1000, (done - spawned) * 1000, bool(body.get("fromPool", False))


def warm_pool_of(api: httpx.Client, template: str) -> dict[str, Any] | None:
    """The template's warmPool as the API shows it; None when this server has no pools."""
    r = api.get(f"/v1/templates/{template}")
    r.raise_for_status()
    pool: dict[str, Any] | None = r.json().get("warmPool")
    return pool


def wait_until_full(api: httpx.Client, template: str, size: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pool = warm_pool_of(api, template) or {}
        if pool.get("ready", 0) >= size:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm pool of {template} did not fill in {timeout:.0f} s: {pool}")
        time.sleep(0.1)


@contextmanager
def pool_of_size(api: httpx.Client, template: str, size: int) -> Iterator[None]:
    before = warm_pool_of(api, template) or {}
    r = api.patch(f"/v1/templates/{template}", json={"warmPool": {"size": size, "eager": True}})
    if r.status_code == 403:
        raise SystemExit(f"setting the warm pool of {template} needs an admin's key (or --no-pool)")
    r.raise_for_status()
    try:
        yield
    finally:
        restore = {"size": before.get("size", 0), "eager": before.get("eager", True)}
        api.patch(f"/v1/templates/{template}", json={"warmPool": restore})


def run(api: httpx.Client, runs: int, first_runs: int, template: str, pools: bool,
        pool_size: int, notes: list[str]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with sandbox(api, template) as sandbox_id:
        execute(api, sandbox_id)  # the kernel starts here (lazy) or is waited for (eager)
        results["warm `1+1` (unary)"] = timed(lambda: execute(api, sandbox_id), runs)
        results["warm `1+1` (SSE)"] = timed(lambda: execute(api, sandbox_id, stream=True), runs)
    # Cold means no pool: a server's default pool (QBOX_WARM_POOL_DEFAULT) is emptied meanwhile.
    with pool_of_size(api, template, 0) if pools else contextlib.nullcontext():
        cold = [spawn_then_first(api, template) for _ in range(first_runs)]
    if any(from_pool for _, _, from_pool in cold):
        raise RuntimeError(f"a spawn came from the pool of {template} while its pool was emptied")
    results[COLD_SPAWN] = [s for s, _, _ in cold]
    results["first `1+1` after a cold spawn"] = [f for _, f, _ in cold]
    if pool_size:
        with pool_of_size(api, template, pool_size):
            pooled = []
            for _ in range(first_runs):
                wait_until_full(api, template, pool_size)
                pooled.append(spawn_then_first(api, template))
        claimed = [(s, f) for s, f, from_pool in pooled if from_pool]
        results[POOL_SPAWN] = [s for s, _ in claimed]
        results["first `1+1` on a pooled sandbox (eager pool)"] = [f for _, f in claimed]
        if len(claimed) < len(pooled):
            # Counted apart: a row mixing claimed and cold spawns would measure neither.
            notes.append(f"{len(pooled) - len(claimed)} of {len(pooled)} spawns with a full warm pool "
                         f"answered `fromPool: false` (booted cold) and are not in the pool rows.")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=100, help="warm `1+1` runs (default 100)")
    parser.add_argument("--first-runs", type=int, default=10, help="cold and pooled spawns (default 10)")
    parser.add_argument("--pool-size", type=int, default=2, help="the warm pool's size while measured (default 2)")
    parser.add_argument("--no-pool", action="store_true", help="skip the warm-pool figures")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.first_runs = 10, 2
    floor = measure_floor(args.quick)
    notes = []
    with qbox_endpoint(args) as endpoint, api_client(endpoint) as api:
        pools = warm_pool_of(api, args.template) is not None
        if not pools and not args.no_pool:
            notes.append("No warm-pool figures: this server's templates have no `warmPool`.")
        pool_size = 0 if args.no_pool or not pools else args.pool_size
        results = run(api, args.runs, args.first_runs, args.template, pools, pool_size, notes)
    what = f"through the HTTP API of `qbox up` (crun, {args.template}), client on loopback"
    text = latency_table(results, what, floor, against=AGAINST)
    publish("\n".join([text, *notes]), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
