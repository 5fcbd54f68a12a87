"""Spawn and exec latency through the agent's whole HTTP API, on a real unix socket.

    .venv/bin/python bench/bench_agent.py [OCI_REF] [--spawns N] [--execs N]    (as root)

Starts ``qbox agent`` (run_agent) in a subprocess on a scratch data dir,
imports the image, then times POST /sandboxes and POST /exec ``true``.
Targets: spawn p50 ≤ 150 ms, exec p50 ≤ 25 ms.
"""

from __future__ import annotations

import argparse

from harness import agent_deletes, agent_execs, agent_spawns, default_image_ref, percentile, running_agent


def _p50(samples: list[float]) -> str:
    return (f"p50 {percentile(samples, 50):6.1f} ms  p90 {percentile(samples, 90):6.1f} ms  "
            f"(n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description="Spawn, exec and delete latency through the agent's "
                                     "HTTP API alone, on a real unix socket (as root).")
    parser.add_argument("ref", nargs="?", help="OCI image to spawn from (default: the built-in image)")
    parser.add_argument("--spawns", type=int, default=30, help="sandboxes to spawn (default 30)")
    parser.add_argument("--execs", type=int, default=200, help="execs of `true` to time (default 200)")
    args = parser.parse_args()
    if args.spawns < 1 or args.execs < 1:
        parser.error("--spawns and --execs must be at least 1")
    ref = args.ref or default_image_ref()
    with running_agent() as (client, _data):
        digest = client.post("/images", json={"ref": ref, "name": "bench"}).json()["digest"]
        spawn, ids = agent_spawns(client, digest, args.spawns)
        execs = agent_execs(client, ids[0], args.execs)
        deletes = agent_deletes(client, ids)
        print(f"spawn   {_p50(spawn)}")
        print(f"exec    {_p50(execs)}")
        print(f"delete  {_p50(deletes)}")


if __name__ == "__main__":
    main()
