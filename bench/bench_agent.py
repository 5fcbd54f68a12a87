"""Spawn, exec and delete through the agent's HTTP API alone, asked what `qbox up` asks of it.

    .venv/bin/python bench/bench_agent.py [OCI_REF] [--spawns N] [--execs N]    (as root)

Starts ``qbox agent`` (run_agent) in a subprocess on a scratch data dir,
imports the image (default: the built-in base image, the one `tpl_python` is
built from) and, on one kept-alive client on its unix socket, times:

- spawn: ``POST /sandboxes`` with the spec the control plane sends for a
  `tpl_python` spawn of bench_api.py (1 vCPU, 512 MB, 2048 MB disk,
  internet on, crun, a deadline, the template's code interpreter setting),
  until the agent answers (the init runs); after 3 untimed warm-ups, each
  sandbox deleted before the next, as bench_api.py does;
- delete: the ``DELETE /sandboxes/{id}`` of those same sandboxes;
- exec `true`: ``POST /sandboxes/{id}/exec`` in one sandbox given
  ``--settle`` seconds to finish starting first.

Why it once reported an agent-alone spawn slower than the whole API (147 ms
p50 against bench_api.py's ≈ 55 ms): it spawned its 30 sandboxes one after
another and kept them all, and each started a Python kernel at boot (about
a CPU-second), so every spawn after the first shared the 2 cores with the
kernels of the ones before it, and the execs and deletes that followed ran
beside all of them (87 ms exec p50). bench_api.py deletes each sandbox
before the next spawn. It had no warm-up either (the first spawn reads the
image's files cold). Now both ask the agent for the same work, and the
agent's figures are what the control plane's add to: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import httpx

from harness import (
    add_report_args,
    agent_execs,
    default_image_ref,
    latency_table,
    measure_floor,
    publish,
    running_agent,
)
from qbox.core.ids import new_sandbox_id

WARMUP = 3


def api_spec(digest: str, code_interpreter: str) -> dict[str, object]:
    """What services/sandboxes.py sends for a `tpl_python` spawn with the defaults
    (timeoutSeconds 600, as bench_api.py spawns)."""
    deadline = datetime.now(UTC) + timedelta(seconds=600)
    return {"id": new_sandbox_id(), "imageDigest": digest, "envs": {}, "vcpus": 1, "memoryMb": 512,
            "diskSizeMb": 2048, "allowInternetAccess": True, "runtime": "crun",
            "deadlineAt": deadline.isoformat().replace("+00:00", "Z"), "codeInterpreter": code_interpreter}


def spawns_and_deletes(client: httpx.Client, digest: str, runs: int,
                       code_interpreter: str) -> tuple[list[float], list[float]]:
    """ms per POST /sandboxes and per DELETE, one sandbox at a time."""
    spawns, deletes = [], []
    for n in range(WARMUP + runs):
        spec = api_spec(digest, code_interpreter)
        started = time.perf_counter()
        client.post("/sandboxes", json=spec).raise_for_status()
        spawned = time.perf_counter()
        client.delete(f"/sandboxes/{spec['id']}").raise_for_status()
        deleted = time.perf_counter()
        if n >= WARMUP:
            spawns.append((spawned - started) * 1000)
            deletes.append((deleted - spawned) * 1000)
    return spawns, deletes


def execs(client: httpx.Client, digest: str, runs: int, settle: float, code_interpreter: str) -> list[float]:
    spec = api_spec(digest, code_interpreter)
    client.post("/sandboxes", json=spec).raise_for_status()
    try:
        time.sleep(settle)
        return agent_execs(client, str(spec["id"]), WARMUP + runs)[WARMUP:]
    finally:
        client.delete(f"/sandboxes/{spec['id']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", nargs="?", help="OCI image to spawn from (default: the built-in image)")
    parser.add_argument("--spawns", type=int, default=50, help="sandboxes to spawn (default 50)")
    parser.add_argument("--execs", type=int, default=100, help="execs of `true` to time (default 100)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds a new sandbox may finish starting before exec is timed (default 3)")
    parser.add_argument("--code-interpreter", choices=("lazy", "eager"), default="lazy",
                        help="the spec's codeInterpreter: tpl_python's default is lazy")
    add_report_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.spawns, args.execs, args.settle = 5, 10, 1.0
    if args.spawns < 1 or args.execs < 1:
        parser.error("--spawns and --execs must be at least 1")
    ref = args.ref or default_image_ref()
    floor = measure_floor(args.quick)
    with running_agent() as (client, _data):
        digest = client.post("/images", json={"ref": ref, "name": "bench"}).json()["digest"]
        spawn, delete = spawns_and_deletes(client, digest, args.spawns, args.code_interpreter)
        exec_true = execs(client, digest, args.execs, args.settle, args.code_interpreter)
    results = {"spawn → running (POST /sandboxes)": spawn, "exec `true`": exec_true,
               "delete (DELETE /sandboxes/{id})": delete}
    what = (f"the agent alone over its unix socket (crun, the built-in image, codeInterpreter "
            f"{args.code_interpreter}, each sandbox deleted before the next)")
    publish(latency_table(results, what, floor, against={"spawn → running (POST /sandboxes)": "run",
                                                         "exec `true`": "exec"}), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
