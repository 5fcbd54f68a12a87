"""Density: how many idle sandboxes one host holds, what each costs, and whether the API stays fast.

    .venv/bin/python bench/bench_density.py                          # root; a throw-away qbox up, up to 1,000
    .venv/bin/python bench/bench_density.py --max 50 --step 10 --settle 5
    .venv/bin/python bench/bench_density.py --template tpl_python-gvisor --max 100 --step 20

Spawns idle sandboxes (``wait=true``, no timeout, ``--disk-mb`` each) in
steps of ``--step``. After each step it waits ``--settle`` seconds for them
to go idle, reads the host's MemAvailable, and times ``--probes`` calls each
of ``GET /v1/sandboxes/{id}`` and ``POST …/exec`` ``true`` on random live
sandboxes. A row: how many are alive, the spawn p50 of that step, the two
probes' p50 and p99, and host memory per sandbox — MemAvailable's drop since
before the first spawn, over the number alive: everything a sandbox costs the
host, but on a shared machine other processes move it too, so the row also
shows what the sandboxes' own memory cgroups are charged, per sandbox (their
processes and the page cache charged to them; a qbox started here only).
It stops at ``--max``, at
the first spawn that fails, or when either probe's p99 passes
``--p99-limit-ms``, or when the host's MemAvailable falls under
``--min-available-mib`` (the machine is not pushed into the OOM killer).

Everything is cleaned up afterwards, after Ctrl-C or SIGTERM too: every
sandbox is deleted through the API, then `qbox up` stops, then whatever it
left is scrubbed and its data dir removed (a second Ctrl-C during the
cleanup is ignored). The qbox started here lifts the rate limits and the
admission's overcommit limits: the question is how many fit, not where
admission control would stop them.

Targets: ≤ 2 MiB of host memory per idle `tpl_python` sandbox (the code
interpreter lazy), API p99 < 100 ms at each step, to 1,000 sandboxes.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from harness import (
    add_common_args,
    api_client,
    floor_table,
    machine_line,
    measure_floor,
    percentile,
    publish,
    qbox_endpoint,
)
from qbox.agent.host_names import HostNames

QBOX_ENV = {
    "QBOX_RATE_LIMIT_SPAWNS_PER_SECOND": "0",
    "QBOX_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
    "QBOX_OVERCOMMIT_CPU": "1000",
    "QBOX_OVERCOMMIT_MEMORY": "100",
    # 1,000 disks of 64 MB are reserved on the data dir's filesystem: keep less of it back.
    "QBOX_DISK_RESERVE_MB": "1024",
}


@dataclass(frozen=True)
class Step:
    alive: int
    spawn_p50: float
    get_p50: float
    get_p99: float
    exec_p50: float
    exec_p99: float
    mib_each: float
    # The sandboxes' own memory cgroups (None: a qbox not started here, whose cgroups we do not know).
    cgroup_mib_each: float | None


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cgroup_mib(cgroup_parent: str, ids: list[str]) -> float:
    """What the sandboxes' memory cgroups are charged (cgroup v1 or v2), in MiB."""
    total = 0
    for sandbox_id in ids:
        for name in (f"memory/{cgroup_parent}/{sandbox_id}/memory.usage_in_bytes",
                     f"{cgroup_parent}/{sandbox_id}/memory.current"):
            path = Path("/sys/fs/cgroup") / name
            if path.exists():
                total += int(path.read_text())
                break
    return total / 1024 / 1024


def spawn_idle(api: httpx.Client, template: str, disk_mb: int) -> tuple[str | None, float, str]:
    """A new idle sandbox's id (None if the spawn failed), ms to running, and why it failed."""
    started = time.perf_counter()
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=120",
                 json={"templateId": template, "timeoutSeconds": 0, "diskSizeMb": disk_mb})
    elapsed = (time.perf_counter() - started) * 1000
    body = r.json()
    if r.status_code != 201 or body.get("status") != "running":
        sandbox_id = body.get("id") if isinstance(body, dict) else None
        return None, elapsed, f"{r.status_code} {body}" + (f" ({sandbox_id})" if sandbox_id else "")
    return str(body["id"]), elapsed, ""


def probe(api: httpx.Client, ids: list[str], n: int) -> tuple[list[float], list[float]]:
    gets, execs = [], []
    for _ in range(n):
        sandbox_id = random.choice(ids)
        started = time.perf_counter()
        api.get(f"/v1/sandboxes/{sandbox_id}").raise_for_status()
        gets.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
        execs.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
    return gets, execs


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored inside: a cleanup half done leaves sandboxes behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def delete_all(api: httpx.Client, ids: list[str]) -> None:
    def delete(sandbox_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            api.delete(f"/v1/sandboxes/{sandbox_id}")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(delete, ids))


def grow(api: httpx.Client, args: argparse.Namespace, ids: list[str], steps: list[Step],
         cgroup_parent: str | None) -> str:
    """Spawn in steps until a reason to stop; the reason."""
    baseline = mem_available_mib()
    while len(ids) < args.max:
        spawns = []
        for _ in range(min(args.step, args.max - len(ids))):
            if mem_available_mib() < args.min_available_mib:
                return f"MemAvailable under {args.min_available_mib} MiB after {len(ids)} sandboxes"
            sandbox_id, elapsed, why = spawn_idle(api, args.template, args.disk_mb)
            if sandbox_id is None:
                return f"spawn {len(ids) + 1} failed: {why}"
            ids.append(sandbox_id)
            spawns.append(elapsed)
        time.sleep(args.settle)
        mib_each = (baseline - mem_available_mib()) / len(ids)
        cgroup_each = cgroup_mib(cgroup_parent, ids) / len(ids) if cgroup_parent else None
        gets, execs = probe(api, ids, args.probes)
        step = Step(len(ids), statistics.median(spawns), percentile(gets, 50), percentile(gets, 99),
                    percentile(execs, 50), percentile(execs, 99), mib_each, cgroup_each)
        steps.append(step)
        print(f"{step.alive:5d} idle  spawn p50 {step.spawn_p50:6.1f} ms  GET p99 {step.get_p99:6.1f} ms  "
              f"exec p99 {step.exec_p99:6.1f} ms  {step.mib_each:7.2f} MiB each (cgroup "
              f"{step.cgroup_mib_each if step.cgroup_mib_each is not None else float('nan'):.2f})", flush=True)
        if max(step.get_p99, step.exec_p99) > args.p99_limit_ms:
            return f"a probe's p99 passed {args.p99_limit_ms:g} ms"
    return f"reached --max {args.max}"


def density_table(steps: list[Step], args: argparse.Namespace, stopped: str) -> str:
    what = (f"idle `{args.template}` sandboxes through `qbox up` (crun), {args.settle:g} s settle per step, "
            f"{args.probes} probes of each kind per step; stopped: {stopped}")
    lines = [machine_line(what), "",
             "| idle sandboxes | spawn p50 ms (this step) | GET p50 ms | GET p99 ms | exec `true` p50 ms "
             "| exec `true` p99 ms | host memory per sandbox MiB | its memory cgroup MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s.alive} | {s.spawn_p50:.1f} | {s.get_p50:.1f} | {s.get_p99:.1f} | {s.exec_p50:.1f} | "
              f"{s.exec_p99:.1f} | {s.mib_each:.2f} | "
              f"{'–' if s.cgroup_mib_each is None else f'{s.cgroup_mib_each:.2f}'} |" for s in steps]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--max", type=int, default=1000, help="sandboxes at most (default 1000)")
    parser.add_argument("--step", type=int, default=100, help="sandboxes per step (default 100)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds the new sandboxes may settle before a step is measured (default 15)")
    parser.add_argument("--probes", type=int, default=50, help="GETs and execs per step (default 50)")
    # Admission never lets the sandboxes' disk reservations add up past the free space.
    parser.add_argument("--disk-mb", type=int, default=64, help="each sandbox's disk (default 64 MB, the least)")
    parser.add_argument("--p99-limit-ms", type=float, default=100.0)
    parser.add_argument("--min-available-mib", type=int, default=2048,
                        help="stop spawning when the host's MemAvailable falls below this (default 2048)")
    args = parser.parse_args()
    if args.quick:
        args.max, args.step, args.settle, args.probes = 20, 10, 3.0, 20
    if min(args.max, args.step, args.probes) < 1:
        parser.error("--max, --step and --probes must be at least 1")
    floor = measure_floor(args.quick)
    signal.signal(signal.SIGTERM, _interrupt)
    ids: list[str] = []
    steps: list[Step] = []
    stopped = "interrupted"
    endpoint_cm = qbox_endpoint(args, env=QBOX_ENV)
    endpoint = endpoint_cm.__enter__()
    try:
        with api_client(endpoint) as api:
            try:
                cgroup_parent = HostNames.for_data_dir(endpoint.data_dir).cgroup_parent.strip("/") \
                    if endpoint.data_dir else None
                stopped = grow(api, args, ids, steps, cgroup_parent)
            except KeyboardInterrupt:
                stopped = "interrupted"
            finally:
                with uninterrupted():
                    print(f"stopping ({stopped}): deleting {len(ids)} sandboxes", flush=True)
                    delete_all(api, ids)
    finally:
        # qbox up stops, what it left is scrubbed, then its data dir goes.
        with uninterrupted():
            try:
                endpoint_cm.__exit__(None, None, None)
                cleanup = ("After the run nothing was left: no mount or cgroup of a sandbox." if endpoint.owned
                           else "Every sandbox spawned was deleted.")
            except AssertionError as leaked:  # running_qbox's check, made before it scrubs
                cleanup = f"After the run (then scrubbed): {leaked}"
    print(cleanup)
    text = density_table(steps, args, stopped) + "\n" + cleanup + "\n\n" + floor_table(floor)
    if stopped == "interrupted":
        args.markdown = None  # an interrupted run's rows are shown, never written over a whole run's
    publish(text, args)
    return 130 if stopped == "interrupted" else 0


if __name__ == "__main__":
    raise SystemExit(main())
