"""What every API benchmark shares: a qbox to talk to, a sandbox, timing, the table.

A benchmark either drives a qbox that is already running (``--base-url`` and
``--api-key``) or starts a throw-away ``qbox up`` in a temporary data
directory (root), exactly as the integration tests do.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import raw_floor  # noqa: E402 - after the path (bench/ is the script's own directory)
import report  # noqa: E402
from raw_floor import RawFloor  # noqa: E402
from report import machine_stamp  # noqa: E402


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    # True when the benchmark started this qbox itself (its rate limits are lifted).
    owned: bool
    # The data dir of a qbox the benchmark started (None: one named on the command line).
    data_dir: Path | None = None


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="a running qbox (default: start a throw-away one)")
    parser.add_argument("--api-key")
    parser.add_argument("--template", default="tpl_python")
    add_report_args(parser)


@contextlib.contextmanager
def qbox_endpoint(args: argparse.Namespace, env: dict[str, str] | None = None) -> Iterator[Endpoint]:
    """The qbox the benchmark talks to: the one named on the command line, or our own
    (started with ``env`` added to its environment)."""
    if args.base_url:
        yield Endpoint(args.base_url, args.api_key or "", owned=False)
        return
    from tests.qbox_process import running_qbox

    # Our own server: its per-key request rate need not pace the samples.
    os.environ.setdefault("QBOX_RATE_LIMIT_REQUESTS_PER_SECOND", "100000")
    os.environ.setdefault("QBOX_RATE_LIMIT_REQUEST_BURST", "100000")
    workdir = Path(tempfile.mkdtemp(prefix="qbox-bench-"))
    try:
        with running_qbox(workdir / "data", env=env) as up:
            yield Endpoint(up.base_url, up.api_key, owned=True, data_dir=up.data_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def api_client(endpoint: Endpoint) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint.base_url, timeout=120,
                      headers={"Authorization": f"Bearer {endpoint.api_key}"}) as api:
        yield api


def spawn(api: httpx.Client, template: str, timeout_seconds: int = 600) -> str:
    """A running sandbox's id (``wait=true``); anything else is an error."""
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                 json={"templateId": template, "timeoutSeconds": timeout_seconds})
    r.raise_for_status()
    body = r.json()
    if body["status"] != "running":
        raise RuntimeError(f"spawn ended {body['status']}: {body.get('endReason')}")
    return str(body["id"])


@contextlib.contextmanager
def sandbox(api: httpx.Client, template: str) -> Iterator[str]:
    sandbox_id = spawn(api, template)
    try:
        yield sandbox_id
    finally:
        api.delete(f"/v1/sandboxes/{sandbox_id}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def timed(fn: Callable[[], None], runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds per call of ``fn``, after ``warmup`` calls that are not counted."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def machine_line(what: str) -> str:
    return f"Measured {machine_stamp()}; {what}:"


def add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", type=Path,
                        help="also write the tables into this file, between the script's markers "
                             "(`make bench`: docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke run that shows the script works, not a measurement")


def measure_floor(quick: bool = False) -> RawFloor | str:
    """The raw runtime's figures for this run's tables, or why there are none."""
    why = raw_floor.why_not_measurable()
    if why:
        return why
    return raw_floor.measure(runs=5, execs=10) if quick else raw_floor.measure()


def floor_table(floor: RawFloor | str) -> str:
    """The raw runtime's own figures, measured in the same run (raw_floor.py)."""
    if isinstance(floor, str):
        return f"Raw runtime floor: not measured in this run ({floor}).\n"
    lines = ["Raw runtime floor, same run (a minimal busybox bundle, no qbox; bench/raw_floor.py):", "",
             "| raw crun | runs | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for name, samples in (("`crun run --detach`", floor.run_detach), ("`crun exec true`", floor.exec_true)):
        lines.append(f"| {name} | {len(samples)} | {percentile(samples, 50):.1f} | "
                     f"{percentile(samples, 90):.1f} | {percentile(samples, 99):.1f} |")
    return "\n".join(lines) + "\n"


def latency_table(results: dict[str, list[float]], what: str, floor: RawFloor | str | None = None,
                  against: dict[str, str] | None = None) -> str:
    """A Markdown table of each operation's runs, p50/p90/p99 and mean in ms; with a floor,
    each row named in ``against`` ("run" or "exec") also as its p50 over the raw one's."""
    raw = {"run": floor.run_detach, "exec": floor.exec_true} if isinstance(floor, RawFloor) else {}
    against = against or {}
    ratio = bool(raw)
    lines = [machine_line(what), "",
             "| operation | runs | p50 ms | p90 ms | p99 ms | mean ms |" + (" p50 ÷ raw crun p50 |" if ratio else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if ratio else "")]
    for name, samples in results.items():
        if not samples:
            continue
        row = (f"| {name} | {len(samples)} | {percentile(samples, 50):.1f} | "
               f"{percentile(samples, 90):.1f} | {percentile(samples, 99):.1f} | "
               f"{statistics.fmean(samples):.1f} |")
        if ratio:
            floor_samples = raw.get(against.get(name, ""))
            row += (f" {percentile(samples, 50) / percentile(floor_samples, 50):.1f}× "
                    f"(`crun {'run --detach' if against[name] == 'run' else 'exec true'}`) |"
                    if floor_samples else " – |")
        lines.append(row)
    text = "\n".join(lines) + "\n"
    return text if floor is None else f"{text}\n{floor_table(floor)}"


def rate_table(rates: dict[str, float]) -> str:
    lines = ["| transfer | MB/s |", "|---|---:|"]
    lines += [f"| {name} | {rate:.0f} |" for name, rate in rates.items()]
    return "\n".join(lines) + "\n"


def publish(text: str, args: argparse.Namespace, section: str | None = None, *, echo: bool = True) -> None:
    """Print the tables (unless ``echo`` is false: printed as they came); with ``--markdown``,
    they become the section's generated text there (``section``: the script's file name)."""
    if echo:
        print(text)
    if args.quick:
        text = f"*A smoke run (`--quick`): sizes too small to quote.*\n\n{text}"
    if args.markdown:
        report.write_section(args.markdown, section or Path(sys.argv[0]).name, text)


# --- benchmarks of the agent alone (no control plane) ---------------------------

_AGENT_SECRET = "bench-secret"
_AGENT = ("import sys; from pathlib import Path; from qbox.agent.main import run_agent; "
          "from qbox.agent.settings import AgentSettings; "
          "run_agent(AgentSettings(data_dir=Path(sys.argv[1]), secret=sys.argv[2], "
          "log_level='warning'))")


def default_image_ref() -> str:
    """The built-in base image the test suite builds (under /var/cache/qbox)."""
    layouts = sorted(glob.glob("/var/cache/qbox/base-images/*/oci"))
    if not layouts:
        raise SystemExit("no base image under /var/cache/qbox/base-images; pass an OCI ref")
    return f"oci:{layouts[-1]}:latest"


@contextlib.contextmanager
def running_agent() -> Iterator[tuple[httpx.Client, Path]]:
    """``qbox agent`` in a subprocess on a scratch data dir: a client on its socket, and the dir.

    Everything it made (sandboxes, mounts, cgroups) is removed afterwards.
    """
    from tests.integration.agent.conftest import force_cleanup

    data = Path(tempfile.mkdtemp(prefix="qbox-bench-")) / "data"
    socket = data / "agent.sock"
    agent = subprocess.Popen([sys.executable, "-c", _AGENT, str(data), _AGENT_SECRET])
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("agent did not start")
            time.sleep(0.02)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=300,
                          base_url="http://agent/internal/v1",
                          headers={"Authorization": f"Bearer {_AGENT_SECRET}"}) as client:
            yield client, data
    finally:
        agent.terminate()
        agent.wait(10)
        force_cleanup(data)
        shutil.rmtree(data.parent, ignore_errors=True)


def agent_spawns(client: httpx.Client, digest: str, runs: int,
                 **spec: object) -> tuple[list[float], list[str]]:
    """Spawn ``runs`` sandboxes one after another: ms per POST /sandboxes, and their ids."""
    from qbox.core.ids import new_sandbox_id

    samples, ids = [], []
    for _ in range(runs):
        sandbox_id = new_sandbox_id()
        started = time.perf_counter()
        r = client.post("/sandboxes", json={"id": sandbox_id, "imageDigest": digest,
                                            "vcpus": 1, "memoryMb": 512, **spec})
        samples.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
        ids.append(sandbox_id)
    return samples, ids


def agent_execs(client: httpx.Client, sandbox_id: str, runs: int) -> list[float]:
    """ms per POST /exec ``true``."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        r = client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
        samples.append((time.perf_counter() - started) * 1000)
        if r.json()["exitCode"] != 0:
            raise RuntimeError(r.text)
    return samples


def agent_deletes(client: httpx.Client, ids: list[str]) -> list[float]:
    """ms per DELETE /sandboxes/{id}."""
    samples = []
    for sandbox_id in ids:
        started = time.perf_counter()
        client.delete(f"/sandboxes/{sandbox_id}").raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return samples
