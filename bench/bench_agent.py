"""Spawn and exec latency through the agent's whole HTTP API, on a real unix socket.

    .venv/bin/python bench/bench_agent.py [OCI_REF]    (as root)

Starts ``qbox agent`` (run_agent) in a subprocess on a scratch data dir,
imports the image, then times POST /sandboxes and POST /exec ``true``.
Targets: spawn p50 ≤ 150 ms, exec p50 ≤ 25 ms.
"""

from __future__ import annotations

import glob
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_api import percentile
from qbox.core.ids import new_sandbox_id
from tests.integration.agent.conftest import force_cleanup

SECRET = "bench-secret"
AGENT = ("import sys; from pathlib import Path; from qbox.agent.main import run_agent; "
         "from qbox.agent.settings import AgentSettings; "
         "run_agent(AgentSettings(data_dir=Path(sys.argv[1]), secret=sys.argv[2], "
         "log_level='warning'))")


def _default_ref() -> str:
    layouts = sorted(glob.glob("/var/cache/qbox/base-images/*/oci"))
    if not layouts:
        raise SystemExit("no base image under /var/cache/qbox/base-images; pass an OCI ref")
    return f"oci:{layouts[-1]}:latest"


def _p50(samples: list[float]) -> str:
    return (f"p50 {percentile(samples, 50):6.1f} ms  p90 {percentile(samples, 90):6.1f} ms  "
            f"(n={len(samples)})")


def main() -> None:
    ref = sys.argv[1] if len(sys.argv) > 1 else _default_ref()
    data = Path(tempfile.mkdtemp(prefix="qbox-bench-")) / "data"
    socket = data / "agent.sock"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(data), SECRET])
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("agent did not start")
            time.sleep(0.02)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=300,
                              base_url="http://agent/internal/v1",
                              headers={"Authorization": f"Bearer {SECRET}"})
        digest = client.post("/images", json={"ref": ref, "name": "bench"}).json()["digest"]
        spawn, execs, ids = [], [], []
        for _ in range(30):
            sandbox_id = new_sandbox_id()
            started = time.perf_counter()
            r = client.post("/sandboxes", json={"id": sandbox_id, "imageDigest": digest,
                                                "vcpus": 1, "memoryMb": 512})
            spawn.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            ids.append(sandbox_id)
        for _ in range(200):
            started = time.perf_counter()
            r = client.post(f"/sandboxes/{ids[0]}/exec", json={"cmd": "true"})
            execs.append((time.perf_counter() - started) * 1000)
            assert r.json()["exitCode"] == 0, r.text
        deletes = []
        for sandbox_id in ids:
            started = time.perf_counter()
            client.delete(f"/sandboxes/{sandbox_id}").raise_for_status()
            deletes.append((time.perf_counter() - started) * 1000)
        print(f"spawn   {_p50(spawn)}")
        print(f"exec    {_p50(execs)}")
        print(f"delete  {_p50(deletes)}")
    finally:
        agent.terminate()
        agent.wait(10)
        force_cleanup(data)


if __name__ == "__main__":
    main()
