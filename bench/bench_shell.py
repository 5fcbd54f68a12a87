"""The interactive shell through the control plane: keystroke echo latency and bulk output.

    .venv/bin/python bench/bench_shell.py                 # starts a throw-away qbox up (root)
    .venv/bin/python bench/bench_shell.py --base-url http://127.0.0.1:8080 --api-key qbox_…

Measures, over one WebSocket on `GET /v1/sandboxes/{id}/shell` (websockets'
sync client, as the SDK uses it):

- keystroke echo: one character sent as an input frame until its echo
  arrives, N runs each, p50/p90/p99 in ms; echoed by the terminal's line
  discipline (`cat` reading the PTY), and by bash's readline (an interactive
  login shell, what a user types into);
- bulk output: `cat` of a file of base64 text (`--mb` MB) under the PTY, read
  as fast as the client can, as MB/s of PTY bytes received, median of 3.

Target: keystroke echo p50 ≤ 5 ms on loopback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from urllib.parse import urlencode

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness import (
    Endpoint,
    add_common_args,
    api_client,
    floor_table,
    latency_table,
    measure_floor,
    publish,
    qbox_endpoint,
    rate_table,
    sandbox,
)


def open_shell(endpoint: Endpoint, sandbox_id: str, **params: str) -> ClientConnection:
    base = endpoint.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    query = urlencode({"cols": 200, "rows": 50, **params})
    return connect(f"{base}/v1/sandboxes/{sandbox_id}/shell?{query}", max_size=2 ** 20,
                   additional_headers={"Authorization": f"Bearer {endpoint.api_key}"})


def wait_for(ws: ClientConnection, needle: bytes, seconds: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no {needle!r} in {seconds} s: {seen[-400:]!r}")
        frame = ws.recv(timeout=left)
        seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


def drain(ws: ClientConnection, quiet: float = 0.05) -> None:
    """Read until nothing came for ``quiet`` seconds."""
    try:
        while True:
            ws.recv(timeout=quiet)
    except TimeoutError:
        return


def keystrokes(ws: ClientConnection, runs: int, clear_every: int) -> list[float]:
    """ms from sending one letter to seeing it echoed; the line is cleared now and then."""
    samples = []
    for i in range(runs + 5):
        letter = "abcdefghijklmnopqrstuvwxyz"[i % 26]
        started = time.perf_counter()
        ws.send(json.dumps({"type": "input", "data": letter}))
        wait_for(ws, letter.encode(), 10)
        if i >= 5:
            samples.append((time.perf_counter() - started) * 1000)
        if i % clear_every == clear_every - 1:
            ws.send(json.dumps({"type": "input", "data": "\x15"}))  # Ctrl-U: an empty line again
            drain(ws)
    return samples


def echo_latency(endpoint: Endpoint, sandbox_id: str, runs: int) -> dict[str, list[float]]:
    results = {}
    with open_shell(endpoint, sandbox_id, command="echo ready; exec cat") as ws:
        wait_for(ws, b"ready")
        results["keystroke echo, line discipline (`cat`)"] = keystrokes(ws, runs, clear_every=100)
    with open_shell(endpoint, sandbox_id) as ws:
        ws.send(json.dumps({"type": "input", "data": "echo re''ady\r"}))
        wait_for(ws, b"ready")
        drain(ws, 0.3)
        results["keystroke echo, bash readline"] = keystrokes(ws, runs, clear_every=50)
    return results


def bulk_output(api: httpx.Client, endpoint: Endpoint, sandbox_id: str, mb: int) -> dict[str, float]:
    r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", timeout=300, json={
        "cmd": "/bin/sh", "args": ["-c", f"head -c {mb * 750_000} /dev/urandom | base64 -w 120 > /tmp/big"]})
    r.raise_for_status()
    rates = []
    for _ in range(3):
        got = 0
        started = time.perf_counter()
        with open_shell(endpoint, sandbox_id, command="cat /tmp/big") as ws:
            try:
                while True:
                    frame = ws.recv(timeout=120)
                    got += len(frame)
            except ConnectionClosed:
                pass
        rates.append(got / 1e6 / (time.perf_counter() - started))
    return {f"`cat` of {mb} MB of text under the PTY, median of 3": statistics.median(rates)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--mb", type=int, default=200, help="size of the bulk output in MB")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.mb = 30, 10
    floor = measure_floor(args.quick)
    with qbox_endpoint(args) as endpoint, api_client(endpoint) as api, sandbox(api, args.template) as sandbox_id:
        latencies = echo_latency(endpoint, sandbox_id, args.runs)
        rates = bulk_output(api, endpoint, sandbox_id, args.mb)
    what = "through the control plane's WebSocket of `qbox up` (crun), client on loopback"
    publish(latency_table(latencies, what) + "\n" + rate_table(rates) + "\n" + floor_table(floor), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
