"""Spawn and exec latency through the agent's whole HTTP API, on a real unix socket.

    .venv/bin/python bench/bench_agent.py [OCI_REF]    (as root)

Starts ``qbox agent`` (run_agent) in a subprocess on a scratch data dir,
imports the image, then times POST /sandboxes and POST /exec ``true``.
Targets: spawn p50 ≤ 150 ms, exec p50 ≤ 25 ms.
"""

from __future__ import annotations

import sys

from harness import agent_deletes, agent_execs, agent_spawns, default_image_ref, percentile, running_agent


def _p50(samples: list[float]) -> str:
    return (f"p50 {percentile(samples, 50):6.1f} ms  p90 {percentile(samples, 90):6.1f} ms  "
            f"(n={len(samples)})")


def main() -> None:
    ref = sys.argv[1] if len(sys.argv) > 1 else default_image_ref()
    with running_agent() as (client, _data):
        digest = client.post("/images", json={"ref": ref, "name": "bench"}).json()["digest"]
        spawn, ids = agent_spawns(client, digest, 30)
        execs = agent_execs(client, ids[0], 200)
        deletes = agent_deletes(client, ids)
        print(f"spawn   {_p50(spawn)}")
        print(f"exec    {_p50(execs)}")
        print(f"delete  {_p50(deletes)}")


if __name__ == "__main__":
    main()
