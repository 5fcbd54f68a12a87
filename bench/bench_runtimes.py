"""crun against runsc (gVisor): spawn latency, idle memory per sandbox, exec and delete.

    .venv/bin/python bench/bench_runtimes.py [--runs 15] [OCI_REF]    (as root)

Starts ``qbox agent`` (run_agent) in a subprocess on a scratch data dir and
imports the image (default: the built-in base image). For each runtime it
spawns ``--runs`` sandboxes one after another through POST /sandboxes (the
agent answers once the init runs), lets them all sit idle, then sums the
``Pss`` of each sandbox's host processes from /proc/<pid>/smaps_rollup:

- crun: the sandbox's init (catatonit) — crun itself does not stay;
- runsc: the sandbox process (the sentry, gVisor's kernel) with its
  children (the platform's stub processes) and the gofer.

PSS splits shared pages (the runsc binary's text, shared libraries) between
the processes that map them, so it is the fair per-sandbox share. Then
exec ``true`` and delete latencies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from harness import (
    add_report_args,
    agent_deletes,
    agent_execs,
    agent_spawns,
    default_image_ref,
    floor_table,
    machine_line,
    measure_floor,
    percentile,
    publish,
    running_agent,
)
from qbox.agent.runtime.runsc import is_gofer_of
from qbox.core.ids import new_sandbox_id

IDLE_SECONDS = 5.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    return percentile(samples, 50), percentile(samples, 90)


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry))
    found, queue = set(), [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found:
                found.add(child)
                queue.append(child)
    return found


def _gofer_of(bundle: Path) -> set[int]:
    pids = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if is_gofer_of(argv, bundle):
            pids.add(int(entry))
    return pids


def sandbox_processes(runtime: str, binary: str, data: Path, sandbox_id: str) -> set[int]:
    """The host processes that belong to one sandbox."""
    state = json.loads(subprocess.run(
        [binary, "--root", str(data / "runtime" / binary), "state", sandbox_id],
        capture_output=True, check=True).stdout)
    pid = int(state["pid"])
    if runtime == "crun":
        return {pid}
    return {pid} | _descendants(pid) | _gofer_of(data / "sandboxes" / sandbox_id)


def bench_runtime(client: httpx.Client, data: Path, digest: str, runtime: str, binary: str,
                  runs: int) -> dict[str, float]:
    warm_up = new_sandbox_id()  # the first spawn of a runtime reads the image's files cold
    client.post("/sandboxes", json={"id": warm_up, "imageDigest": digest,
                                    "runtime": runtime}).raise_for_status()
    client.delete(f"/sandboxes/{warm_up}").raise_for_status()
    spawn, ids = agent_spawns(client, digest, runs, runtime=runtime)
    time.sleep(IDLE_SECONDS)
    memory = [sum(_pss_kib(pid) for pid in sandbox_processes(runtime, binary, data, sid)) / 1024
              for sid in ids]
    execs = agent_execs(client, ids[0], 20)
    deletes = agent_deletes(client, ids)
    spawn_p50, spawn_p90 = _percentiles(spawn)
    exec_p50, _ = _percentiles(execs)
    delete_p50, _ = _percentiles(deletes)
    return {"spawn_p50": spawn_p50, "spawn_p90": spawn_p90,
            "pss_median": statistics.median(memory), "pss_mean": statistics.mean(memory),
            "exec_p50": exec_p50, "delete_p50": delete_p50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("ref", nargs="?")
    add_report_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    ref = args.ref or default_image_ref()
    floor = measure_floor(args.quick)
    with running_agent() as (client, data):
        health = client.get("/health").json()
        if "runsc" not in health.get("runtimes", []):
            raise SystemExit("the agent offers no runsc here (is runsc installed?)")
        digest = client.post("/images", json={"ref": ref, "name": "bench"}).json()["digest"]
        results: dict[str, dict[str, float] | str] = {}
        for name, binary in (("crun", health["runtime"]), ("runsc", "runsc")):
            try:
                results[name] = bench_runtime(client, data, digest, name, binary, args.runs)
            except httpx.HTTPStatusError as exc:
                results[name] = exc.response.text
    lines = [machine_line(f"the agent alone, {args.runs} sandboxes per runtime, idle {IDLE_SECONDS:.0f} s "
                          f"before measuring memory; default runtime here: {health['runtime']}"), "",
             "| runtime | spawn p50 ms | spawn p90 ms | idle PSS / sandbox MiB (median, mean) "
             "| exec `true` p50 ms | delete p50 ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if isinstance(r, str):
            lines.append(f"| {name} | failed: {r[:2000]} |")
            continue
        lines.append(f"| {name} | {r['spawn_p50']:.1f} | {r['spawn_p90']:.1f} | "
                     f"{r['pss_median']:.2f}, {r['pss_mean']:.2f} | {r['exec_p50']:.1f} | "
                     f"{r['delete_p50']:.1f} |")
    publish("\n".join(lines) + "\n\n" + floor_table(floor), args)


if __name__ == "__main__":
    main()
