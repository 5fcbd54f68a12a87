"""Preview proxy overhead: a server inside a sandbox, through the control plane vs directly.

    .venv/bin/python bench/bench_preview.py                  # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_preview.py --quick
    .venv/bin/python bench/bench_preview.py --markdown docs/benchmarks.md

A sandbox runs tests/preview_servers.py on port 8000, exposed public. The same requests
go two ways in the same run: through the preview URL (``Host: 8000-{sandbox}.localhost``
to the control plane, which relays through the agent) and straight to the sandbox's own
address from the host (what the agent itself connects to). Measured: latency of a small
answer (``/hello``, 5 bytes) on one kept-alive connection, requests/s of that with one and
with 8 concurrent clients, and the throughput of a 100 MB download.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from harness import add_common_args, api_client, latency_table, percentile, publish, qbox_endpoint, timed

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.preview_servers import source  # noqa: E402

PORT = 8000
MB = 1_000_000
# The test server (tests/preview_servers.py, which sets TCP_NODELAY itself) on the given port.
_SERVER = ("import sys; sys.path.insert(0, '/tmp'); import preview_servers as s; "
           "s.serve('0.0.0.0', int(sys.argv[1]))\n")
# The sandbox's IPv4 address as it sees it (the route a packet would take; nothing is sent).
_ADDRESS = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.connect(('10.255.255.255', 1)); print(s.getsockname()[0])")


def serve(api: httpx.Client, sandbox_id: str) -> str:
    """Start the server in the sandbox, expose its port; the sandbox's address."""
    api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": "/tmp/preview_servers.py"},
            content=source().encode()).raise_for_status()
    api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": "/tmp/bench_server.py"},
            content=_SERVER.encode()).raise_for_status()
    api.post(f"/v1/sandboxes/{sandbox_id}/commands",
             json={"cmd": "python3", "args": ["/tmp/bench_server.py", str(PORT)]}).raise_for_status()
    api.post(f"/v1/sandboxes/{sandbox_id}/ports", json={"port": PORT, "visibility": "public"}).raise_for_status()
    deadline = time.monotonic() + 30
    while not api.post(f"/v1/sandboxes/{sandbox_id}/ports/{PORT}/probe").json().get("reachable"):
        if time.monotonic() > deadline:
            raise RuntimeError("the server in the sandbox never listened")
        time.sleep(0.2)
    r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "python3", "args": ["-c", _ADDRESS]})
    r.raise_for_status()
    return str(r.json()["stdout"]).strip()


def clients(base_url: str, sandbox_id: str, address: str) -> dict[str, tuple[str, dict[str, str]]]:
    """(base URL, headers) of each way in."""
    host = f"{PORT}-{sandbox_id}.localhost:{base_url.rsplit(':', 1)[1]}"
    return {"through the preview proxy": (base_url, {"host": host}),
            "directly to the sandbox": (f"http://{address}:{PORT}", {})}


def small(base_url: str, headers: dict[str, str], runs: int) -> list[float]:
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        def hello() -> None:
            r = client.get("/hello")
            if r.status_code != 200 or r.content != b"hello":
                raise RuntimeError(f"/hello answered {r.status_code}: {r.text[:200]}")
        return timed(hello, runs, warmup=20)


def concurrent_rate(base_url: str, headers: dict[str, str], per_client: int, width: int) -> float:
    """Requests/s of ``width`` clients, each on its own kept-alive connection."""
    def one(_: int) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            for _ in range(per_client):
                client.get("/hello").raise_for_status()

    with ThreadPoolExecutor(width) as pool:
        started = time.perf_counter()
        list(pool.map(one, range(width)))
        return width * per_client / (time.perf_counter() - started)


def download(base_url: str, headers: dict[str, str], size: int, runs: int) -> float:
    """The median MB/s of ``runs`` downloads of ``size`` bytes."""
    rates = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        for _ in range(runs):
            received = 0
            started = time.perf_counter()
            with client.stream("GET", f"/bytes?size={size}") as answer:
                answer.raise_for_status()
                for chunk in answer.iter_raw(1 << 20):
                    received += len(chunk)
            if received != size:
                raise RuntimeError(f"a download of {size} bytes brought {received}")
            rates.append(size / MB / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=500, help="small requests per way in")
    parser.add_argument("--download-mb", type=int, default=100)
    parser.add_argument("--downloads", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.downloads = 100, 1
    latencies: dict[str, list[float]] = {}
    rates: dict[str, tuple[float, float, float]] = {}
    with qbox_endpoint(args) as endpoint, api_client(endpoint) as api:
        sandbox_id = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                              json={"templateId": args.template}).json()["id"]
        try:
            address = serve(api, sandbox_id)
            for way, (base_url, headers) in clients(endpoint.base_url, sandbox_id, address).items():
                samples = small(base_url, headers, args.runs)
                latencies[f"GET /hello, {way}"] = samples
                rates[way] = (1000 / statistics.fmean(samples),
                              concurrent_rate(base_url, headers, max(10, args.runs // 8), 8),
                              download(base_url, headers, args.download_mb * MB, args.downloads))
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
    text = latency_table(latencies, f"a 5-byte answer from a server in a crun sandbox ({args.template}), "
                                    "one kept-alive connection, client on loopback")
    lines = ["", f"| way in | requests/s, 1 client | requests/s, 8 clients | {args.download_mb} MB download, MB/s |",
             "|---|---:|---:|---:|"]
    lines += [f"| {way} | {one:.0f} | {eight:.0f} | {mbs:.0f} |" for way, (one, eight, mbs) in rates.items()]
    proxied, direct = (latencies[f"GET /hello, {way}"] for way in rates)
    lines += ["", f"The proxy adds {percentile(proxied, 50) - percentile(direct, 50):.2f} ms at p50 and "
                  f"{percentile(proxied, 99) - percentile(direct, 99):.2f} ms at p99."]
    publish(text + "\n".join(lines) + "\n", args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
