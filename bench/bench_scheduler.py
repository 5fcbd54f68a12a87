"""Scheduler decision time: one placement among 100 and 1,000 simulated hosts, in-process.

    .venv/bin/python bench/bench_scheduler.py                         # no root, no server
    .venv/bin/python bench/bench_scheduler.py --hosts 100 1000 5000 --samples 0 2 --runs 5000

Times ``services/scheduler.py`` ``schedule`` alone (no database, no HTTP): the
fleet is built once per size with a seeded spread — host sizes of 8 to 64
vCPUs, each loaded between empty and nearly full, about 4 % unhealthy or
down and 3 % draining, a tenth offering crun only, a tenth labelled
``gpu=true``, about 60 % holding the template's image — and each run places
a request drawn from typical sizes (1–4 vCPUs, 512 MiB–8 GiB, 2–10 GiB of
disk). ``k`` is ``QBOX_SCHEDULER_SAMPLE`` (0: every candidate is ranked).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import add_report_args, floor_table, machine_line, measure_floor, percentile, publish  # noqa: E402
from qbox.server.services.admission import HostCapacity, Overcommit, Resources  # noqa: E402
from qbox.server.services.scheduler import Candidate, Policy, Request, schedule  # noqa: E402

GIB = 1024
IMAGE = "sha256:" + "ab" * 32
REQUEST_SIZES = [Resources(1, 512, 2 * GIB), Resources(1, GIB, 2 * GIB), Resources(2, 2 * GIB, 4 * GIB),
                 Resources(2, 4 * GIB, 5 * GIB), Resources(4, 8 * GIB, 10 * GIB)]


def fleet(count: int, rng: random.Random) -> list[Candidate]:
    hosts = []
    for n in range(count):
        vcpus = rng.choice([8, 16, 32, 64])
        capacity = HostCapacity(vcpus=vcpus, memory_mb=vcpus * 4 * GIB, disk_total_mb=vcpus * 25 * GIB,
                                disk_free_mb=vcpus * 20 * GIB, sandbox_disks_mb=0)
        load = rng.uniform(0.0, 0.95)
        sandboxes = int(vcpus * 2 * load)
        roll = rng.random()
        hosts.append(Candidate(
            id=f"host-{n:05d}",
            status="unhealthy" if roll < 0.02 else "down" if roll < 0.04 else "ready",
            draining=0.04 <= roll < 0.07,
            capacity=capacity,
            reserved=Resources(int(vcpus * load), int(capacity.memory_mb * load * rng.uniform(0.5, 1.0)),
                               int(vcpus * 20 * GIB * load * rng.uniform(0.2, 0.8))),
            sandbox_count=sandboxes,
            max_sandboxes=vcpus * 4,
            runtimes=frozenset({"crun"}) if rng.random() < 0.1 else frozenset({"crun", "runsc"}),
            images=frozenset({IMAGE, "sha256:other"}) if rng.random() < 0.6 else frozenset({"sha256:other"}),
            labels={"zone": rng.choice("abc"), **({"gpu": "true"} if rng.random() < 0.1 else {})},
        ))
    return hosts


def decision_times(hosts: list[Candidate], sample: int, runs: int,
                   rng: random.Random) -> tuple[list[float], list[float]]:
    """Microseconds per ``schedule`` call, wall clock and this thread's CPU time (what the
    decision costs, without the time a busy machine gave to other processes), after a warm-up
    that is not counted."""
    policy = Policy(Overcommit(cpu=1.0, memory=1.0, disk_reserve_mb=4 * GIB), sample, random.Random(1))
    requests = [Request(rng.choice(REQUEST_SIZES), "crun", IMAGE) for _ in range(runs)]
    for request in requests[:50]:
        schedule(hosts, request, policy)
    wall: list[float] = []
    cpu: list[float] = []
    clock, cpu_clock = time.perf_counter, time.thread_time
    for request in requests:
        started, cpu_started = clock(), cpu_clock()
        decision = schedule(hosts, request, policy)
        cpu.append((cpu_clock() - cpu_started) * 1e6)
        wall.append((clock() - started) * 1e6)
        if not decision.hosts:
            raise SystemExit(f"no host took {request}: the simulated fleet is too full")
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 1000], help="fleet sizes")
    parser.add_argument("--samples", type=int, nargs="+", default=[0, 2, 8],
                        help="values of k, hosts ranked per group (0: all)")
    parser.add_argument("--runs", type=int, default=2000, help="decisions timed per row")
    parser.add_argument("--seed", type=int, default=15)
    add_report_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.runs = 200
    floor = measure_floor(args.quick)
    lines = [machine_line(f"one decision, {args.runs} runs per row, CPython {sys.version.split()[0]}"), "",
             "| hosts | k | p50 µs | p99 µs | CPU p50 µs | CPU p99 µs |", "|---:|---:|---:|---:|---:|---:|"]
    for count in args.hosts:
        hosts = fleet(count, random.Random(args.seed))
        for sample in args.samples:
            wall, cpu = decision_times(hosts, sample, args.runs, random.Random(args.seed))
            lines.append(f"| {count} | {sample} | {percentile(wall, 50):.0f} | {percentile(wall, 99):.0f} | "
                         f"{percentile(cpu, 50):.0f} | {percentile(cpu, 99):.0f} |")
    publish("\n".join(lines) + "\n\n" + floor_table(floor), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
