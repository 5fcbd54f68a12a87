"""Several qbox hosts on one machine, for the multi-host integration tests.

A Linux bridge in the root network namespace carries a /24 of its own; each
host agent runs in a network namespace of its own, joined to the bridge by a
veth pair, with its own address, data dir and hostname (a UTS namespace), so
it is a separate host as far as qbox can tell. The control-plane replicas run
in the root namespace, listen on the bridge's address and share one database.

::

    root netns:  bridge qbtNNN 10.251.N.1 ── replicas (qbox server) :PORT
                    │ veth qbtNNNh0          │ veth qbtNNNh1 ...
    netns qbtNNN-h0: eth0 10.251.N.10    netns qbtNNN-h1: eth0 10.251.N.11
                     qbox agent --join http://10.251.N.1:PORT --listen 10.251.N.10:7070

Agents enter their namespace with ``nsenter --net`` only, as an operator
would: they share the machine's mount namespace, so a restarted agent finds
its sandboxes' mounts where it left them.

Teardown trusts nothing of the code under test and runs even when a test
failed (the fixture's finalizer, and ``atexit`` for a run that is cut short):
live sandboxes are killed through the API; then what is left is removed by
hand, in order: the agents and replicas, every container under each agent's
runtime roots (sandboxes outlive their agent by design), whatever else carries
an agent's data-dir names (its cgroup parent and the processes in it, its
sandboxes' namespace pins: tests/agent_names.py), mounts under the cluster's
directory, the hosts' namespaces, veths and the bridge.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from qbox.agent.host_names import HostNames
from qbox.core.cert_fingerprint import fingerprint
from tests.agent_names import scrub_names
from tests.qbox_process import ROOT, free_port

# Where each agent listens inside its namespace (every namespace has its own ports).
AGENT_PORT = 7070
# Fast clocks: a host is unhealthy after 3 s without a beat, down after 5 s, and its agent
# fences itself a little later, so the control plane has marked its sandboxes lost first.
# Beats every 0.5 s would make a host that a burst of spawns starves of CPU for 1.5 s
# unhealthy (bench_hosts.py saw it fail boots in flight).
HEARTBEAT_SECONDS = 1.0
LOST_SECONDS = 5.0
FENCE_SECONDS = 7.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
LIVE = ("booting", "running")

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30.0,
             interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _free_subnet() -> int:
    """N of a 10.251.N.0/24 no interface or route of this machine uses yet."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show").stdout
    start = os.getpid() % 200
    for offset in range(200):
        n = 20 + (start + offset) % 200
        if f"10.251.{n}." not in used:
            return n
    raise RuntimeError("no free 10.251.N.0/24 left for a test cluster")


@dataclass
class Network:
    """The bridge and its /24; hosts' namespaces are added by ``attach``."""

    name: str
    subnet: int
    namespaces: list[str] = field(default_factory=list)

    @classmethod
    def create(cls) -> Network:
        net = cls(name=f"qbt{os.getpid() % 1000}", subnet=_free_subnet())
        _run("ip", "link", "add", net.name, "type", "bridge")
        try:
            _run("ip", "addr", "add", f"{net.gateway}/24", "dev", net.name)
            _run("ip", "link", "set", net.name, "up")
        except RuntimeError:
            _run("ip", "link", "del", net.name, check=False)
            raise
        return net

    @property
    def gateway(self) -> str:
        return f"10.251.{self.subnet}.1"

    def address(self, index: int) -> str:
        return f"10.251.{self.subnet}.{10 + index}"

    def veth(self, index: int) -> str:
        return f"{self.name}h{index}"

    def netns(self, index: int) -> str:
        return f"{self.name}-h{index}"

    def attach(self, index: int) -> None:
        """Host ``index``'s namespace: eth0 with its address, loopback, a default route via
        the bridge; the veth's other end on the bridge."""
        ns, veth = self.netns(index), self.veth(index)
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", veth, "master", self.name, "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", self.gateway)

    def cut(self, index: int) -> None:
        _run("ip", "link", "set", self.veth(index), "down")

    def restore(self, index: int) -> None:
        _run("ip", "link", "set", self.veth(index), "up")

    def remove(self) -> None:
        # Deleting a namespace deletes its eth0, and with it the veth's root end.
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns, check=False)
        for index in range(len(self.namespaces)):
            _run("ip", "link", "del", self.veth(index), check=False)
        _run("ip", "link", "del", self.name, check=False)
        self.namespaces.clear()


def _launch(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _end(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Replica:
    """One ``qbox server`` on the bridge's address."""

    index: int
    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return _read(self.log_path)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Agent:
    """One ``qbox agent --join`` in its own namespace; ``host_id`` once it has joined."""

    index: int
    netns: str
    address: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    # The join token it was started with, and its host's id once it has joined.
    token: str = ""
    host_id: str | None = None

    @property
    def listen(self) -> str:
        return f"{self.address}:{AGENT_PORT}"

    @property
    def hostname(self) -> str:
        return f"{self.netns}.test"

    def log(self) -> str:
        return _read(self.log_path)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def runtime_roots(self) -> list[Path]:
        """The OCI runtimes' state dirs (``DATA_DIR/runtime/crun`` and the like)."""
        return sorted(path for path in (self.data_dir / "runtime").glob("*")
                      if path.is_dir() and path.name in ("crun", "runc"))

    def containers(self) -> list[str]:
        """Ids of the containers the OCI runtime knows on this host, whatever qbox thinks."""
        ids: list[str] = []
        for root in self.runtime_roots():
            listing = _run(root.name, "--root", str(root), "list", "--format", "json", check=False)
            with contextlib.suppress(ValueError):
                ids += [c["id"] for c in json.loads(listing.stdout or "[]") or []]
        return sorted(ids)

    def remove_containers(self) -> None:
        for root in self.runtime_roots():
            listing = _run(root.name, "--root", str(root), "list", "--format", "json", check=False)
            with contextlib.suppress(ValueError):
                for container in json.loads(listing.stdout or "[]") or []:
                    _run(root.name, "--root", str(root), "delete", "--force", container["id"],
                         check=False)


class Cluster:
    """Replicas and agents on one bridge and one database; see the module's docstring."""

    def __init__(self, base: Path, database_url: str, *, replicas: int = 2, tls: bool = False) -> None:
        self.base = base
        self.database_url = database_url
        # Replicas serve HTTPS (QBOX_TLS=auto) and agents join pinning the cluster CA.
        self.tls = tls
        # Added to the replicas' and to the agents' environments.
        self.env: dict[str, str] = {}
        # The agents offer no built-in template (its build copies the python image into the
        # registry and a host's store: minutes). A test that wants it clears this.
        self.agent_env: dict[str, str] = {"QBOX_AGENT_BUILTINS": "off"}
        self.network: Network | None = None
        self.replicas: list[Replica] = []
        self.agents: list[Agent] = []
        self.admin_key = ""
        self._replica_count = replicas
        self._closed = False

    # --- start -----------------------------------------------------------------------------

    def open_network(self) -> str:
        """The bridge (first of all, so services the cluster needs can listen on it); its
        address."""
        atexit.register(self.close)
        self.network = Network.create()
        return self.network.gateway

    def network_gateway(self) -> str:
        """The bridge's address: where replicas listen and agents reach the root namespace."""
        assert self.network is not None
        return self.network.gateway

    def start(self, hosts: int) -> None:
        """The replicas, one after the other, then ``hosts`` agents, each joined and ready."""
        port = free_port()
        for index in range(self._replica_count):
            self.start_replica(index, port + index if index else port)
        self.admin_key = (self.replicas[0].data_dir / "admin-key").read_text().strip()
        for _ in range(hosts):
            self.add_agent()

    def replica_env(self, replica: Replica) -> dict[str, str]:
        return {"QBOX_DATA_DIR": str(replica.data_dir), "QBOX_DATABASE_URL": self.database_url,
                "QBOX_PUBLIC_URL": replica.url,
                "QBOX_HOST_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
                "QBOX_HOST_LOST_SECONDS": str(LOST_SECONDS),
                "QBOX_HOST_FENCE_SECONDS": str(FENCE_SECONDS),
                **({"QBOX_TLS": "auto", "QBOX_TLS_NAMES": self.network_gateway()} if self.tls else {}),
                **self.env}

    def start_replica(self, index: int, port: int) -> Replica:
        assert self.network is not None
        data_dir = self.base / f"replica-{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        scheme = "https" if self.tls else "http"
        replica = Replica(index=index, url=f"{scheme}://{self.network.gateway}:{port}",
                          data_dir=data_dir, log_path=self.base / f"replica-{index}.log")
        self.replicas.append(replica)
        # One at a time: the first creates the admin, the next finds it.
        self.run_replica(replica)
        return replica

    def run_replica(self, replica: Replica) -> None:
        """Start (or restart) ``replica`` and wait until it answers."""
        assert self.network is not None and not replica.running()
        port = replica.url.rsplit(":", 1)[1]
        replica.process = _launch([sys.executable, "-m", "qbox", "server", "--host",
                                   self.network.gateway, "--port", port],
                                  replica.log_path, self.replica_env(replica))
        self._wait_healthy(replica)

    def stop_replica(self, replica: Replica) -> None:
        _end(replica.process)

    def _wait_healthy(self, replica: Replica, timeout: float = 90.0) -> None:
        def answers() -> bool:
            assert replica.process is not None
            if replica.process.poll() is not None:
                raise RuntimeError(f"replica {replica.index} exited: {replica.log()[-4000:]}")
            # OSError: with TLS, the replica's CA file is written when it starts.
            with contextlib.suppress(httpx.HTTPError, OSError):
                return httpx.get(f"{replica.url}/healthz", timeout=1,
                                 verify=self.verify(replica.index)).status_code == 200
            return False
        wait_for(answers, f"replica {replica.index} to answer", timeout)

    @property
    def joined(self) -> list[Agent]:
        """The agents that became hosts (a refused one never does)."""
        return [agent for agent in self.agents if agent.host_id is not None]

    def new_machine(self) -> Agent:
        """A namespace on the bridge and an empty data dir: a machine no agent runs on yet."""
        assert self.network is not None
        index = len(self.agents)
        self.network.attach(index)
        agent = Agent(index=index, netns=self.network.netns(index),
                      address=self.network.address(index), data_dir=self.base / f"host-{index}",
                      log_path=self.base / f"host-{index}.log")
        agent.data_dir.mkdir(parents=True)
        self.agents.append(agent)
        return agent

    def add_agent(self) -> Agent:
        """A new host, joined with a fresh token and ready."""
        agent = self.new_machine()
        self.start_agent(agent, self.join_token())
        self.wait_status(agent, "ready")
        return agent

    def agent_command(self, agent: Agent, token: str, replica: int = 0) -> list[str]:
        """The agent in its network namespace (nsenter: that namespace only) and a UTS
        namespace of its own, so each host has its own hostname."""
        qbox = (f"hostname {agent.hostname} && exec {sys.executable} -m qbox agent "
                f"--join {self.replicas[replica].url} --token {token} --listen {agent.listen} "
                f"--data-dir {agent.data_dir}")
        if self.tls:
            qbox += f" --ca-hash {fingerprint(self.ca_pem(replica))}"
        return ["nsenter", f"--net={NETNS_DIR / agent.netns}", "unshare", "--uts", "sh", "-c", qbox]

    def start_agent(self, agent: Agent, token: str, replica: int = 0) -> None:
        """Start (or restart) ``agent``; a restarted one has its credential in its data dir
        and does not use ``token`` again."""
        assert not agent.running()
        agent.token = token
        agent.process = _launch(self.agent_command(agent, token, replica), agent.log_path,
                                self.agent_env)

    def wait_joined(self, agent: Agent, timeout: float = 60.0) -> dict[str, Any]:
        def joined() -> dict[str, Any] | None:
            if not agent.running():
                raise RuntimeError(f"agent {agent.index} exited: {agent.log()[-4000:]}")
            return self.host_at(agent.address)
        host = wait_for(joined, f"agent {agent.index} to join", timeout)
        agent.host_id = host["id"]
        return host

    def wait_status(self, agent: Agent, status: str, timeout: float = 60.0) -> dict[str, Any]:
        if agent.host_id is None:
            self.wait_joined(agent, timeout)
        assert agent.host_id is not None

        def reached() -> dict[str, Any] | None:
            host = self.api().get(f"/v1/hosts/{agent.host_id}").json()
            return host if host["status"] == status else None
        return wait_for(reached, f"host {agent.index} to be {status}", timeout)

    def stop_agent(self, agent: Agent) -> None:
        _end(agent.process)

    def kill_agent(self, agent: Agent) -> None:
        """``kill -9`` of the agent (its sandboxes are other processes and keep running)."""
        assert agent.process is not None
        os.killpg(agent.process.pid, signal.SIGKILL)
        agent.process.wait()

    def cut(self, agent: Agent) -> None:
        """Take the host off the network: its veth's bridge end goes down."""
        assert self.network is not None
        self.network.cut(agent.index)

    def restore(self, agent: Agent) -> None:
        assert self.network is not None
        self.network.restore(agent.index)

    def heal(self) -> None:
        """Every replica and host back: stopped replicas and agents started again, links up,
        each host ready (a test that failed halfway must not leave the next one short)."""
        for replica in self.replicas:
            if not replica.running():
                self.run_replica(replica)
        for agent in self.joined:
            self.restore(agent)
            if not agent.running():
                self.start_agent(agent, agent.token)
        for agent in self.joined:
            self.wait_status(agent, "ready")

    # --- the API ---------------------------------------------------------------------------

    def api(self, replica: int = 0, key: str | None = None) -> httpx.Client:
        """A client of one replica (the admin's key unless ``key``); close it or use ``with``."""
        return httpx.Client(base_url=self.replicas[replica].url, timeout=60, verify=self.verify(replica),
                            headers={"Authorization": f"Bearer {key or self.admin_key}"})

    def ca_pem(self, replica: int = 0) -> str:
        """The cluster CA's certificate, as a TLS replica writes it beside its own."""
        return (self.replicas[replica].data_dir / "tls" / "ca.crt").read_text()

    def verify(self, replica: int = 0) -> ssl.SSLContext | bool:
        """What a client of the replicas trusts: the cluster CA with TLS."""
        return ssl.create_default_context(cadata=self.ca_pem(replica)) if self.tls else True

    def join_token(self, **body: Any) -> str:
        with self.api() as api:
            r = api.post("/v1/host-tokens", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def hosts(self) -> list[dict[str, Any]]:
        with self.api() as api:
            r = api.get("/v1/hosts")
        assert r.status_code == 200, r.text
        return list(r.json())

    def host_at(self, address: str) -> dict[str, Any] | None:
        """The host whose data-plane address is ``address`` (an agent's own IP)."""
        found = [h for h in self.hosts() if h.get("address") and address in h["address"]]
        return found[0] if found else None

    def host(self, agent: Agent) -> dict[str, Any]:
        with self.api() as api:
            r = api.get(f"/v1/hosts/{agent.host_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def agent_of(self, host_id: str) -> Agent:
        return next(agent for agent in self.agents if agent.host_id == host_id)

    def sandboxes(self, replica: int = 0) -> list[dict[str, Any]]:
        with self.api(replica) as api:
            r = api.get("/v1/sandboxes", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return list(r.json())

    # --- teardown --------------------------------------------------------------------------

    def kill_live_sandboxes(self) -> None:
        """End every live sandbox through whichever replica answers (best effort)."""
        for replica in range(len(self.replicas)):
            try:
                live = [sb for sb in self.sandboxes(replica) if sb["status"] in LIVE]
                with self.api(replica) as api:
                    for sb in live:
                        api.delete(f"/v1/sandboxes/{sb['id']}", timeout=15)
                return
            except (httpx.HTTPError, AssertionError, ValueError):
                continue

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self.network is not None:
            for index in range(len(self.agents)):
                with contextlib.suppress(RuntimeError):
                    self.network.restore(index)
        if self.admin_key:
            self.kill_live_sandboxes()
        for agent in self.agents:
            self.stop_agent(agent)
        for replica in self.replicas:
            self.stop_replica(replica)
        for agent in self.agents:
            agent.remove_containers()
        scrub(self.base, [agent.data_dir for agent in self.agents])
        if self.network is not None:
            self.network.remove()
        shutil.rmtree(self.base, ignore_errors=True)


def sandbox_cgroups(data_dir: Path) -> list[Path]:
    """The cgroups under the agent's own parent (host_names.py), in every hierarchy."""
    parent = HostNames.for_data_dir(data_dir).cgroup_parent.strip("/")
    return sorted(path for top in (CGROUP_ROOT / parent, *CGROUP_ROOT.glob(f"*/{parent}"))
                  for path in top.glob("*") if path.is_dir())


def scrub(base: Path, data_dirs: list[Path]) -> None:
    """Whatever sandboxes left on the machine once their containers are deleted: processes
    (by cgroup), cgroups, namespace pins (agent_names.scrub_names), mounts under ``base``."""
    for data_dir in data_dirs:
        scrub_names(data_dir)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(base))), key=len, reverse=True):
        _run("umount", "-l", target, check=False)


def leftovers(cluster: Cluster) -> list[str]:
    """What ended sandboxes left behind on the machine (containers, cgroups, mounts)."""
    found = [f"container {cid} on host {agent.index}" for agent in cluster.agents
             for cid in agent.containers()]
    found += [f"cgroup {path}" for agent in cluster.agents for path in sandbox_cgroups(agent.data_dir)]
    found += [f"mount {line.split()[1]}"
              for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(cluster.base / "host-"))
              and "/sandboxes/" in line.split()[1]]
    return found


@contextlib.contextmanager
def cluster_network(database_url: str, replicas: int = 2, tls: bool = False) -> Iterator[Cluster]:
    """A cluster on ``database_url`` with its bridge up, torn down whatever happens; the
    caller sets its ``env`` and ``agent_env``, then calls ``start``."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="qbox-multihost-")), database_url,
                      replicas=replicas, tls=tls)
    try:
        cluster.open_network()
        yield cluster
    finally:
        cluster.close()
