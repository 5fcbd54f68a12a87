"""Many hosts: database writes per operation, spawn throughput, and time to mark a host lost.

    .venv/bin/python bench/bench_hosts.py writes                        # in-process, no root
    .venv/bin/python bench/bench_hosts.py writes --database postgresql  # a throw-away cluster
    flock /tmp/qbox-itest.lock .venv/bin/python bench/bench_hosts.py cluster   # root, real crun
    … --markdown docs/benchmarks.md

``writes`` runs the control plane in-process over the real agent app with the
fake runtime (the unit tests' harness) and counts, with SQLAlchemy's cursor
hooks, the INSERT, UPDATE and DELETE statements (and rows) each operation
makes until the database has been quiet for a moment: a spawn (through to
running), an exec, a kill, and an agent's heartbeat. docs/operations.md
("On paper") multiplies them out for 100 hosts and 10,000 sandboxes.

``cluster`` uses the multi-host test infrastructure (tests/multihost.py: each
agent in its own network namespace, two ``qbox server`` replicas on one
PostgreSQL): spawn throughput with 50 concurrent clients spread over both
replicas, each sandbox deleted once it is running, with 1, 2 and 3 hosts
(and, meanwhile, how old the hosts' heartbeats get under that load); then the
time from a host's veth going down until every sandbox it held reads
``endReason`` "host lost" through the API.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import add_report_args, floor_table, machine_line, measure_floor, percentile, publish  # noqa: E402

T = TypeVar("T")
_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)
# Rows every spawn onto a host (its row, in admission) or every audited change (the chain's one
# head row) locks until its transaction ends.
HELD = ("hosts", "audit_head")
# The database counts as done with an operation once nothing was written for this long
# (boot tasks and the audit writer finish after the HTTP answer).
QUIET_SECONDS = 0.5


@dataclass
class Writes:
    """Statements and rows written, by "VERB table"."""

    statements: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    # Per transaction that wrote: ms from its first write ("*"), and from its first write of
    # each table in HELD, to its end: how long it held the write lock, and those rows' locks.
    held_ms: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in ("*", *HELD)})


class WriteCounter:
    """Counts every write any engine in this process makes while it is active."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = Writes()
        self.last_write = time.monotonic()
        # Per connection in a writing transaction: when it first wrote ("*"), and each table of HELD.
        self._open: dict[int, dict[str, float]] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[WriteCounter]:
        from sqlalchemy import Engine, event

        hooks: dict[str, Callable[..., None]] = {
            "before_cursor_execute": self._starting, "after_cursor_execute": self._executed,
            "commit": self._committed, "rollback": self._ended}
        for name, hook in hooks.items():
            event.listen(Engine, name, hook)
        try:
            yield self
        finally:
            for name, hook in hooks.items():
                event.remove(Engine, name, hook)

    def _starting(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        match = _WRITE.match(statement)
        if match is None:
            return
        now = time.perf_counter()
        with self._lock:
            first = self._open.setdefault(id(conn), {"*": now})
            if match.group(2) in HELD:
                first.setdefault(match.group(2), now)

    def _executed(self, _conn: Any, cursor: Any, statement: str, parameters: Any, _context: Any,
                  executemany: bool) -> None:
        match = _WRITE.match(statement)
        if match is None:
            return
        key = f"{match.group(1).split()[0].upper()} {match.group(2)}"
        rowcount = cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else -1
        if rowcount < 0:
            rowcount = len(parameters) if executemany else 1
        with self._lock:
            self.current.statements[key] += 1
            self.current.rows[key] += rowcount
            self.last_write = time.monotonic()

    def _committed(self, conn: Any) -> None:
        with self._lock:
            self.current.commits += 1
        self._ended(conn)

    def _ended(self, conn: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            for key, since in self._open.pop(id(conn), {}).items():
                self.current.held_ms[key].append((now - since) * 1000)

    def measure(self, operation: Callable[[], T]) -> tuple[Writes, T]:
        """What ``operation`` wrote, including what it left running wrote after it returned;
        and what it returned."""
        with self._lock:
            self.current = Writes()
        result = operation()
        deadline = time.monotonic() + 10
        while time.monotonic() - self.last_write < QUIET_SECONDS and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            return self.current, result


def _median_writes(samples: list[Writes]) -> tuple[float, float, float, Counter[str]]:
    """Median statements, rows and commits per run, and the statements of the median run."""
    by_statements = sorted(samples, key=lambda w: sum(w.statements.values()))
    middle = by_statements[len(by_statements) // 2]
    return (statistics.median(sum(w.statements.values()) for w in samples),
            statistics.median(sum(w.rows.values()) for w in samples),
            statistics.median(w.commits for w in samples), middle.statements)


def _spawn(client: Any, auth: dict[str, str]) -> str:
    r = client.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python"}, headers=auth)
    if r.status_code != 201 or r.json()["status"] != "running":
        raise RuntimeError(f"spawn failed: {r.status_code} {r.text}")
    return str(r.json()["id"])


def _call(method: Callable[..., Any], url: str, **kwargs: Any) -> None:
    r = method(url, **kwargs)
    if r.status_code >= 300:
        raise RuntimeError(f"{url}: {r.status_code} {r.text}")


def _load() -> str:
    """The machine's load when the table is made: timings on a shared machine vary with it."""
    return f" (load average {os.getloadavg()[0]:.1f})"


def _p50_p99(samples: list[float]) -> str:
    return f"{percentile(samples, 50):.1f} / {percentile(samples, 99):.1f}" if samples else "–"


def _join_host(client: Any, auth: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
    """A joined host's credential and report, or None when this control plane has no join route."""
    from qbox._version import __version__
    from qbox.protocol.host import Capacity, HostReport, JoinRequest

    token = client.post("/v1/host-tokens", json={}, headers=auth)
    if token.status_code == 404:
        return None
    token.raise_for_status()
    report = HostReport(version=__version__, runtime="crun", runtimes=["crun"], sandboxes=0,
                        capacity=Capacity(vcpus=16, memory_mb=65536, disk_total_mb=500_000,
                                          disk_free_mb=400_000), hostname="bench-host",
                        address="http://127.0.0.1:9")
    joined = client.post("/v1/agent/join", json=JoinRequest(token=token.json()["token"],
                                                            report=report).wire())
    joined.raise_for_status()
    return joined.json()["credential"], report.wire()


def writes_table(database: str, runs: int) -> str:
    from tests.unit.server.conftest import make_harness

    counter = WriteCounter()
    with tempfile.TemporaryDirectory(prefix="qbox-bench-") as tmp, contextlib.ExitStack() as stack:
        url = None
        if database == "postgresql":
            from tests.postgres import running_cluster

            url = stack.enter_context(stack.enter_context(running_cluster()).database())
        harness = stack.enter_context(contextlib.contextmanager(make_harness)(Path(tmp), database=url))
        client, auth = harness.client, harness.auth()
        stack.enter_context(counter.active())
        samples: dict[str, list[Writes]] = {"spawn (to running)": [], "exec `true`": [], "kill": [],
                                            "heartbeat": []}
        for _ in range(runs):
            spawn_writes, sandbox_id = counter.measure(functools.partial(_spawn, client, auth))
            samples["spawn (to running)"].append(spawn_writes)
            samples["exec `true`"].append(counter.measure(functools.partial(
                _call, client.post, f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "true"}, headers=auth))[0])
            samples["kill"].append(counter.measure(functools.partial(
                _call, client.delete, f"/v1/sandboxes/{sandbox_id}", headers=auth))[0])
        # Joined last: spawns above must not be placed on a host that is not there.
        joined = _join_host(client, auth)
        if joined is not None:
            credential, report = joined
            beat = functools.partial(_call, client.post, "/v1/agent/heartbeat", json=report,
                                     headers={"Authorization": f"Bearer {credential}"})
            samples["heartbeat"] = [counter.measure(beat)[0] for _ in range(runs)]
    lines = [machine_line(f"database writes per operation, in-process control plane on {database}, "
                          f"median of {runs} runs{_load()}; ms p50/p99 over the transactions that wrote, from "
                          f"their first write (of any row; of a host's row; of the audit head row) "
                          f"to their end"), "",
             "| operation | statements | rows | commits | write held ms | host row held ms "
             "| audit head held ms | statements by table |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, writes in samples.items():
        if not writes:
            lines.append(f"| {name} | – | – | – | – | – | – | not measured: this control plane has no join route |")
            continue
        statements, rows, commits, detail = _median_writes(writes)
        spelled = ", ".join(f"{key} ×{n}" for key, n in sorted(detail.items()))
        held = " | ".join(_p50_p99([ms for w in writes for ms in w.held_ms[key]]) for key in ("*", *HELD))
        lines.append(f"| {name} | {statements:g} | {rows:g} | {commits:g} | {held} | {spelled} |")
    return "\n".join(lines) + "\n"


# --- the cluster: real agents in network namespaces, two replicas, PostgreSQL -----------------

@dataclass(frozen=True)
class Clocks:
    """The replicas' host clocks (QBOX_HOST_HEARTBEAT_SECONDS, QBOX_HOST_LOST_SECONDS)."""

    heartbeat: float
    lost: float


# Each sandbox is small, and the replicas admit 50 of them on one host of this machine.
SANDBOX = {"vcpus": 1, "memoryMb": 64, "diskSizeMb": 256}


@contextlib.contextmanager
def running_cluster(template: str, clocks: Clocks) -> Iterator[Any]:
    """Two replicas on a throw-away PostgreSQL, a registry on the bridge, no host yet, and the
    benchmark's template (``tpl_bench``) once the first host has joined."""
    from qbox.agent.images.base_image import base_image_dir, machine_cache_dir
    from tests import postgres
    from tests.multihost import cluster_network
    from tests.registry import registry_with_busybox

    base_images = str(base_image_dir(machine_cache_dir()).parent)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres.running_cluster())
        cluster = stack.enter_context(cluster_network(stack.enter_context(pg.database())))
        registry = stack.enter_context(registry_with_busybox(cluster.network_gateway()))
        cluster.env.update({
            "QBOX_REGISTRY": f"{registry}/qbox", "QBOX_IMPORT_DIRS": base_images,
            "QBOX_HOST_HEARTBEAT_SECONDS": str(clocks.heartbeat), "QBOX_HOST_LOST_SECONDS": str(clocks.lost),
            "QBOX_HOST_FENCE_SECONDS": str(clocks.lost * 1.5),
            # Room for every client's sandbox on one host; no request or spawn rate limit.
            "QBOX_OVERCOMMIT_CPU": "100", "QBOX_OVERCOMMIT_MEMORY": "4",
            "QBOX_RATE_LIMIT_SPAWNS_PER_SECOND": "0", "QBOX_RATE_LIMIT_REQUESTS_PER_SECOND": "0"})
        cluster.agent_env.update({"QBOX_REGISTRY": f"{registry}/qbox", "QBOX_INSECURE_REGISTRIES": registry,
                                  "QBOX_IMPORT_DIRS": base_images, "QBOX_AGENT_RUNSC": "off"})
        cluster.start(hosts=1)
        _build_template(cluster, template, registry)
        yield cluster


def _build_template(cluster: Any, template: str, registry: str) -> None:
    from qbox.agent.images.base_image import base_image_ref, machine_cache_dir
    from tests.multihost import wait_for
    from tests.registry import BUSYBOX_REPO

    image = base_image_ref(machine_cache_dir()) if template == "python" else f"{registry}/{BUSYBOX_REPO}"
    with cluster.api() as api:
        r = api.post("/v1/templates", json={"name": "bench", "imageRef": image, "public": True})
        if r.status_code != 201:
            raise RuntimeError(f"template: {r.status_code} {r.text}")

        def built() -> dict[str, Any] | None:
            found: dict[str, Any] = api.get("/v1/templates/tpl_bench").json()
            return found if found["status"] in ("ready", "failed") else None
        done = wait_for(built, "the benchmark's template to build", timeout=600, interval=0.5)
    if done["status"] != "ready":
        raise RuntimeError(f"the template failed to build: {done}")


def _spawned_on(cluster: Any, agent: Any) -> str:
    """A running sandbox on ``agent``'s host (every other ready host drained meanwhile)."""
    others = [h["id"] for h in cluster.hosts() if h["id"] != agent.host_id and h["status"] == "ready"]
    with cluster.api() as api:
        try:
            for host_id in others:
                api.post(f"/v1/hosts/{host_id}/drain").raise_for_status()
            r = api.post("/v1/sandboxes", params={"wait": "true", "waitTimeoutSec": 300},
                         json={"templateId": "tpl_bench", "timeoutSeconds": 3600, **SANDBOX})
        finally:
            for host_id in others:
                api.post(f"/v1/hosts/{host_id}/uncordon")
    if r.status_code != 201 or r.json()["status"] != "running" or r.json()["hostId"] != agent.host_id:
        raise RuntimeError(f"spawn on host {agent.host_id}: {r.status_code} {r.text}")
    return str(r.json()["id"])


def _add_host(cluster: Any) -> None:
    """One more host, joined, ready and holding the template's image (pulled from the registry
    by one sandbox), so throughput does not count the first pull."""
    agent = cluster.add_agent()
    with cluster.api() as api:
        api.delete(f"/v1/sandboxes/{_spawned_on(cluster, agent)}").raise_for_status()


@dataclass
class Throughput:
    hosts: int
    clients: int
    spawned: int
    seconds: float
    latencies_ms: list[float]
    refused: int
    spread: Counter[str]
    # Spawns that answered with a sandbox that did not run, by endReason.
    failed: Counter[str]
    # The oldest any host's last heartbeat was seen (GET /v1/hosts every 0.2 s meanwhile), and
    # the statuses other than ready the hosts were seen in.
    heartbeat_age_s: float
    statuses: set[str]


def throughput(cluster: Any, clients: int, spawns: int) -> Throughput:
    """``spawns`` sandboxes by ``clients`` concurrent clients, alternating between the
    replicas: each spawns with wait=true, then deletes what it spawned, until the count is
    reached. A 503 (no room at that moment) is counted and retried after 0.2 s; a sandbox that
    failed to boot is counted by its end reason."""
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    started = 0
    latencies: list[float] = []
    hosts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    refused = 0

    def client(n: int) -> None:
        nonlocal started, refused
        with cluster.api(n % len(cluster.replicas)) as api:
            while True:
                with lock:
                    if started >= spawns:
                        return
                    started += 1
                while True:
                    t0 = time.perf_counter()
                    r = api.post("/v1/sandboxes", params={"wait": "true", "waitTimeoutSec": 300},
                                 json={"templateId": "tpl_bench", **SANDBOX})
                    if r.status_code != 503:
                        break
                    with lock:
                        refused += 1
                    time.sleep(0.2)
                if r.status_code != 201:
                    raise RuntimeError(f"spawn: {r.status_code} {r.text}")
                if r.json()["status"] != "running":
                    with lock:
                        failed[str(r.json().get("endReason"))] += 1
                    continue
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(elapsed)
                    hosts[r.json()["hostId"]] += 1
                api.delete(f"/v1/sandboxes/{r.json()['id']}").raise_for_status()

    began = time.perf_counter()
    with _watching_hosts(cluster) as watched, ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client, n) for n in range(clients)]:
            done.result()
    return Throughput(len(cluster.joined), clients, len(latencies), time.perf_counter() - began,
                      latencies, refused, hosts, failed, watched.heartbeat_age_s, watched.statuses)


@dataclass
class HostWatch:
    heartbeat_age_s: float = 0.0
    statuses: set[str] = field(default_factory=set)


@contextlib.contextmanager
def _watching_hosts(cluster: Any) -> Iterator[HostWatch]:
    """What the API says of the hosts while the block runs: how old the oldest heartbeat got,
    and every status but ready (a host judged unhealthy under load refuses work)."""
    from qbox.core.timefmt import from_wire, utcnow

    watch, stop = HostWatch(), threading.Event()

    def poll() -> None:
        with cluster.api(1) as api:
            while not stop.wait(0.2):
                for host in api.get("/v1/hosts").json():
                    if host["status"] != "ready":
                        watch.statuses.add(host["status"])
                    if host.get("lastHeartbeatAt"):
                        age = (utcnow() - from_wire(host["lastHeartbeatAt"])).total_seconds()
                        watch.heartbeat_age_s = max(watch.heartbeat_age_s, age)

    watcher = threading.Thread(target=poll, name="host watch", daemon=True)
    watcher.start()
    try:
        yield watch
    finally:
        stop.set()
        watcher.join(10)


@dataclass
class Loss:
    sandboxes: int
    unhealthy_s: float
    down_s: float
    lost_s: float


def host_loss(cluster: Any, sandboxes: int) -> Loss:
    """Cut the last host off (its veth down) with ``sandboxes`` running on it; the time until
    the API shows it unhealthy, down, and every one of those sandboxes ended "host lost".
    Afterwards the host is back, ready, and has nothing left over."""
    from tests.multihost import wait_for

    agent = cluster.joined[-1]
    ids = [_spawned_on(cluster, agent) for _ in range(sandboxes)]
    seen: dict[str, float] = {}
    with cluster.api(1) as api:
        began = time.perf_counter()
        cluster.cut(agent)
        try:
            while "lost" not in seen:
                if time.perf_counter() - began > 600:
                    raise RuntimeError(f"host {agent.host_id} not lost after 600 s: {seen}")
                status = api.get(f"/v1/hosts/{agent.host_id}").json()["status"]
                if status in ("unhealthy", "down"):
                    seen.setdefault(status, time.perf_counter() - began)
                reasons = [api.get(f"/v1/sandboxes/{sandbox_id}").json().get("endReason") or ""
                           for sandbox_id in ids]
                if all(reason.startswith("host lost") for reason in reasons):
                    seen["lost"] = time.perf_counter() - began
                time.sleep(0.05)
        finally:
            cluster.restore(agent)
    cluster.wait_status(agent, "ready", timeout=120)
    wait_for(lambda: _no_containers(agent), "the lost sandboxes' containers to go", timeout=120)
    return Loss(sandboxes, seen.get("unhealthy", float("nan")), seen.get("down", float("nan")), seen["lost"])


def _no_containers(agent: Any) -> bool:
    try:
        return not agent.containers()
    except OSError:  # a directory under the data dir went while it was walked: look again
        return False


def cluster_tables(host_counts: list[int], clients: int, spawns: int, losses: int,
                   per_loss: int, template: str, clocks: Clocks) -> Iterator[str]:
    """The throughput table once it is measured, then the host-loss table."""
    with running_cluster(template, clocks) as cluster:
        runs: list[Throughput] = []
        for hosts in host_counts:
            while len(cluster.joined) < hosts:
                _add_host(cluster)
            throughput(cluster, min(clients, 10), min(spawns, 20))  # warm-up, not counted
            runs.append(throughput(cluster, clients, spawns))
        yield throughput_table(runs, template)
        if losses:
            yield loss_table([host_loss(cluster, per_loss) for _ in range(losses)], clocks)


def throughput_table(runs: list[Throughput], template: str) -> str:
    lines = [machine_line(f"spawn throughput through two `qbox server` replicas on PostgreSQL, agents "
                          f"in network namespaces of this one machine (they share its "
                          f"{os.cpu_count()} cores), template `{template}`, each sandbox "
                          f"{SANDBOX['vcpus']} vCPU/{SANDBOX['memoryMb']} MB, spawned with wait=true "
                          f"then deleted by the same client{_load()}"), "",
             "| hosts | clients | sandboxes running | seconds | sandboxes/s | spawn p50 ms | spawn p99 ms "
             "| refused (503) | failed to boot | per host | oldest heartbeat s | other statuses |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for run in runs:
        per_host = ", ".join(str(n) for _, n in run.spread.most_common())
        lines.append(f"| {run.hosts} | {run.clients} | {run.spawned} | {run.seconds:.1f} | "
                     f"{run.spawned / run.seconds:.1f} | {percentile(run.latencies_ms, 50):.0f} | "
                     f"{percentile(run.latencies_ms, 99):.0f} | {run.refused} | {sum(run.failed.values())} | "
                     f"{per_host} | {run.heartbeat_age_s:.1f} | {', '.join(sorted(run.statuses)) or '–'} |")
    failures = Counter[str]()
    for run in runs:
        failures.update(run.failed)
    lines += [f"- failed to boot ×{n}: {reason}" for reason, n in failures.most_common()]
    return "\n".join(lines) + "\n"


def loss_table(lost: list[Loss], clocks: Clocks) -> str:
    lines = [machine_line(f"a host cut off (its veth down), QBOX_HOST_HEARTBEAT_SECONDS={clocks.heartbeat:g}, "
                          f"QBOX_HOST_LOST_SECONDS={clocks.lost:g}: seconds until the API shows "
                          f"it unhealthy, down, and its sandboxes ended \"host lost\""), "",
             "| run | sandboxes on it | unhealthy s | down s | all lost s | lost − QBOX_HOST_LOST_SECONDS |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n, loss in enumerate(lost, 1):
        lines.append(f"| {n} | {loss.sandboxes} | {loss.unhealthy_s:.1f} | {loss.down_s:.1f} | "
                     f"{loss.lost_s:.1f} | {loss.lost_s - clocks.lost:+.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_report_args(parser)
    parts = parser.add_subparsers(dest="part", required=True)
    writes = parts.add_parser("writes", help="database writes per operation (in-process, no root)")
    writes.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    writes.add_argument("--runs", type=int, default=20)
    cluster = parts.add_parser("cluster", help="throughput and host loss on a local cluster (root)")
    cluster.add_argument("--hosts", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 3],
                         help="host counts to measure, ascending (default 1,2,3)")
    cluster.add_argument("--clients", type=int, default=50)
    cluster.add_argument("--spawns", type=int, default=200, help="sandboxes per host count")
    cluster.add_argument("--template", choices=("busybox", "python"), default="busybox",
                         help="busybox: the spawn path alone; python: qbox up's image, whose "
                              "kernel warm-up costs about a CPU-second per sandbox")
    cluster.add_argument("--losses", type=int, default=3, help="host cut-offs to time")
    cluster.add_argument("--sandboxes-per-loss", type=int, default=3)
    cluster.add_argument("--heartbeat-seconds", type=float, default=2.0,
                         help="QBOX_HOST_HEARTBEAT_SECONDS of the replicas: a host is unhealthy after three "
                              "missed; under 50 concurrent spawns on this 2-core machine 0.5 s was too short")
    cluster.add_argument("--lost-seconds", type=float, default=10.0, help="QBOX_HOST_LOST_SECONDS of the replicas")
    args = parser.parse_args()
    section = f"bench_hosts.py {args.part}"
    if args.part == "writes":
        if args.quick:
            args.runs = 3
        floor = measure_floor(args.quick)
        publish(writes_table(args.database, args.runs) + "\n" + floor_table(floor), args, section)
    else:
        if os.geteuid() != 0:
            raise SystemExit("the cluster part runs agents in network namespaces: run it as root")
        if args.quick:
            args.hosts, args.clients, args.spawns, args.losses = [1, 2], 5, 10, 1
        floor = measure_floor(args.quick)
        tables = []
        for table in cluster_tables(args.hosts, args.clients, args.spawns, args.losses, args.sandboxes_per_loss,
                                    args.template, Clocks(args.heartbeat_seconds, args.lost_seconds)):
            print(table, flush=True)  # each as soon as it is measured: the whole part takes minutes
            tables.append(table)
        print(floor_table(floor))
        publish("\n".join([*tables, floor_table(floor)]), args, section, echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
