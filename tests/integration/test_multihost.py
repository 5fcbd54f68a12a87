"""Many hosts, for real: three agents, each in a network namespace of its own (veth and bridge),
with its own data dir, crun root and cgroup parent; two control-plane replicas on one
PostgreSQL; crun sandboxes; a real OCI registry carrying templates between hosts.

One cluster serves the module (tests/multihost.py builds it and tears it down); the tests run
in file order, the disruptive ones (``kill -9``, a host cut off) last, and each leaves every
host up and ready, none cordoned, and no live sandbox behind (``clean_slate``), even when it
failed halfway.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from qbox.core.states import TERMINAL_STATES
from qbox.server.services.lifecycle import TABLE
from tests import postgres
from tests.multihost import HEARTBEAT_SECONDS, LOST_SECONDS, Agent, Cluster, cluster_network, leftovers, wait_for
from tests.registry import BUSYBOX_REPO, registry_with_busybox

pytestmark = pytest.mark.integration

Json = dict[str, Any]

# Each host takes this many sandboxes of one vCPU: the replicas' CPU overcommit is set so.
SLOTS = 4
CPUS = len(os.sched_getaffinity(0))
SMALL: Json = {"templateId": "tpl_bb", "vcpus": 1, "memoryMb": 128, "diskSizeMb": 256}
# Agents fence themselves after this long without an answer: longer than the deadline test
# needs to see an agent end a sandbox on its own while every replica is down.
FENCE_SECONDS = 12
DEADLINE_SECONDS = 6
# The first words of every reason a sandbox can end with (the lifecycle table's; a reason that
# is all placeholder, never_ready's, has none to match).
END_REASONS = tuple(prefix for rule in TABLE.values() if rule.target in TERMINAL_STATES
                    if (prefix := rule.reason.split("{")[0]))


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Cluster, str]]:
    """The cluster, and the address of the registry its builds are pushed to."""
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres.running_cluster())
        cluster = stack.enter_context(cluster_network(stack.enter_context(pg.database())))
        registry = stack.enter_context(registry_with_busybox(cluster.network_gateway()))
        cluster.env.update({
            "QBOX_REGISTRY": f"{registry}/qbox",
            # SLOTS and a half: SLOTS sandboxes of one vCPU fit, one more does not.
            "QBOX_OVERCOMMIT_CPU": str((SLOTS + 0.5) / CPUS),
            "QBOX_RATE_LIMIT_SPAWNS_PER_SECOND": "0",
            "QBOX_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
            "QBOX_HOST_FENCE_SECONDS": str(FENCE_SECONDS),
        })
        cluster.agent_env.update({"QBOX_REGISTRY": f"{registry}/qbox",
                                  "QBOX_INSECURE_REGISTRIES": registry,
                                  # crun only: gVisor's start-up probe is not needed here.
                                  "QBOX_AGENT_RUNSC": "off"})
        cluster.start(hosts=3)
        base_template(cluster, registry)
        yield cluster, registry


def base_template(cluster: Cluster, registry: str) -> None:
    """``tpl_bb`` (the test registry's busybox: a few MB where the built-in python image would
    copy hundreds into every host's store): built on one host, pushed to the registry, pulled by
    the others, each warmed by one sandbox so the tests' first spawns do not wait for a pull."""
    with cluster.api() as api:
        r = api.post("/v1/templates", json={"name": "bb", "imageRef": f"{registry}/{BUSYBOX_REPO}",
                                            "public": True})
        assert r.status_code == 201, r.text
        built = wait_built(api, r.json()["id"])
    assert built["status"] == "ready", (built["buildError"], built.get("log"))
    for agent in cluster.joined:
        sb = spawned_on(cluster, agent)
        with cluster.api() as api:
            api.delete(f"/v1/sandboxes/{sb['id']}")


@pytest.fixture(scope="module")
def cluster(setup: tuple[Cluster, str]) -> Cluster:
    return setup[0]


@pytest.fixture(scope="module")
def registry(setup: tuple[Cluster, str]) -> str:
    return setup[1]


@pytest.fixture(autouse=True)
def clean_slate(cluster: Cluster) -> Iterator[None]:
    yield
    cluster.heal()
    cluster.kill_live_sandboxes()
    with cluster.api() as api:
        for host in api.get("/v1/hosts").json():
            if host["status"] == "draining":
                api.post(f"/v1/hosts/{host['id']}/uncordon")
    wait_for(lambda: not any(agent.containers() for agent in cluster.joined),
             "the ended sandboxes' containers to go")


# --- helpers ------------------------------------------------------------------------------------


def spawn(cluster: Cluster, replica: int = 0, **fields: Any) -> httpx.Response:
    with cluster.api(replica) as api:
        return api.post("/v1/sandboxes", params={"wait": "true", "waitTimeoutSec": 120},
                        json={**SMALL, **fields})


def spawned(cluster: Cluster, replica: int = 0, **fields: Any) -> Json:
    r = spawn(cluster, replica, **fields)
    assert r.status_code == 201, (r.text, [(h["id"], h["status"]) for h in cluster.hosts()])
    sandbox: Json = r.json()
    assert sandbox["status"] == "running", sandbox
    return sandbox


def spawned_on(cluster: Cluster, agent: Agent, **fields: Any) -> Json:
    """A sandbox on ``agent``'s host: every other ready host is drained for the spawn."""
    cluster.wait_status(agent, "ready")
    others = [h["id"] for h in cluster.hosts() if h["id"] != agent.host_id and h["status"] == "ready"]
    with cluster.api() as api:
        try:
            for host_id in others:
                assert api.post(f"/v1/hosts/{host_id}/drain").status_code == 200
            sandbox = spawned(cluster, **fields)
        finally:
            for host_id in others:
                api.post(f"/v1/hosts/{host_id}/uncordon")
    assert sandbox["hostId"] == agent.host_id, sandbox
    return sandbox


def wait_built(api: httpx.Client, template_id: str) -> Json:
    def finished() -> Json | None:
        template: Json = api.get(f"/v1/templates/{template_id}").json()
        return template if template["status"] in ("ready", "failed") else None
    done = wait_for(finished, f"{template_id} to build", timeout=300, interval=0.5)
    if done["status"] != "ready":
        done["log"] = api.get(f"/v1/templates/{template_id}/build-log").text
    return done


def sandbox(cluster: Cluster, sandbox_id: str, replica: int = 0) -> Json:
    with cluster.api(replica) as api:
        r = api.get(f"/v1/sandboxes/{sandbox_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_ended(cluster: Cluster, sandbox_id: str, timeout: float = 30.0) -> Json:
    def ended() -> Json | None:
        found = sandbox(cluster, sandbox_id)
        return found if found["status"] in ("killed", "terminated", "failed") else None
    return wait_for(ended, f"{sandbox_id} to end", timeout)


def ended_events(cluster: Cluster, sandbox_id: str) -> list[str]:
    with cluster.api() as api:
        events = api.get(f"/v1/sandboxes/{sandbox_id}/logs").json()
    return [e["message"] for e in events if e["message"].startswith(END_REASONS)]


def by_host(cluster: Cluster) -> dict[str, Json]:
    return {h["id"]: h for h in cluster.hosts()}


def live_on(cluster: Cluster, agent: Agent) -> list[str]:
    return sorted(sb["id"] for sb in cluster.sandboxes()
                  if sb["hostId"] == agent.host_id and sb["status"] in ("booting", "running"))


def exec_stdout(cluster: Cluster, sandbox_id: str, script: str, replica: int = 0) -> str:
    with cluster.api(replica) as api:
        r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "sh", "args": ["-c", script]})
    assert r.status_code == 200, r.text
    assert r.json()["exitCode"] == 0, r.json()
    return str(r.json()["stdout"])


def join(cluster: Cluster, token: str) -> httpx.Response:
    """``POST /v1/agent/join`` as an agent would, from an address no host has."""
    report = {"version": "test", "runtime": "crun", "runtimes": ["crun"], "sandboxes": 0,
              "address": f"http://{cluster.network_gateway()}:1"}
    return httpx.post(f"{cluster.replicas[1].url}/v1/agent/join",
                      json={"token": token, "report": report}, timeout=30)


def token_status(cluster: Cluster, token_id: str) -> Json:
    with cluster.api() as api:
        return next(t for t in api.get("/v1/host-tokens").json() if t["id"] == token_id)


# --- joining ------------------------------------------------------------------------------------


def test_three_agents_joined_with_tokens_are_three_hosts(cluster: Cluster) -> None:
    hosts = by_host(cluster)
    assert len(hosts) == 3 and len(cluster.joined) == 3, hosts
    for agent in cluster.joined:
        host = hosts[agent.host_id or ""]
        assert host["status"] == "ready" and host["kind"] == "joined", host
        assert host["hostname"] == agent.hostname, host
        assert agent.listen in host["address"], host
        assert host["totalVcpus"] == CPUS and host["totalMemoryMb"] > 0, host
        assert "crun" in host["runtimes"] and host["version"], host
    # Heartbeats keep coming.
    first = {h["id"]: h["lastHeartbeatAt"] for h in hosts.values()}
    wait_for(lambda: all(h["lastHeartbeatAt"] != first[h["id"]] for h in cluster.hosts()),
             "a newer heartbeat from every host", timeout=10)
    with cluster.api(1) as api:
        tokens = api.get("/v1/host-tokens").json()
    used = {t["hostId"] for t in tokens if t["status"] == "used"}
    assert used == set(hosts), tokens


def test_a_used_an_expired_and_a_revoked_token_are_refused(cluster: Cluster) -> None:
    # A real agent with a token another host already used does not become a host.
    machine = cluster.new_machine()
    cluster.start_agent(machine, cluster.joined[0].token)
    assert machine.process is not None
    assert machine.process.wait(60) != 0, machine.log()
    assert "refused" in machine.log(), machine.log()
    assert cluster.host_at(machine.address) is None
    assert join(cluster, cluster.joined[0].token).json()["error"]["code"] == "invalid_join_token"

    with cluster.api() as api:
        expiring = api.post("/v1/host-tokens", json={"ttlSeconds": 60}).json()
        revoked = api.post("/v1/host-tokens", json={}).json()
        assert api.delete(f"/v1/host-tokens/{revoked['id']}").status_code == 204
    with psycopg.connect(cluster.database_url, autocommit=True) as db:
        db.execute("UPDATE join_tokens SET expires_at = created_at WHERE id = %s", (expiring["id"],))
    assert token_status(cluster, expiring["id"])["status"] == "expired"
    assert token_status(cluster, revoked["id"])["status"] == "revoked"
    for token in (expiring["token"], revoked["token"], "not-a-token"):
        r = join(cluster, token)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_join_token", r.text
    assert len(cluster.hosts()) == 3


# --- placement ----------------------------------------------------------------------------------


def test_utilization_moves_when_sandboxes_start_and_end(cluster: Cluster) -> None:
    before = by_host(cluster)
    sb = spawned(cluster, memoryMb=128)
    host_id = sb["hostId"]
    after = by_host(cluster)[host_id]
    assert after["usedVcpus"] == before[host_id]["usedVcpus"] + 1, after
    assert after["usedMemoryMb"] == before[host_id]["usedMemoryMb"] + 128, after
    assert after["sandboxCount"] == before[host_id]["sandboxCount"] + 1, after
    assert sb["id"] in cluster.agent_of(host_id).containers()
    with cluster.api(1) as api:
        assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 204
    back = by_host(cluster)[host_id]
    assert (back["usedVcpus"], back["usedMemoryMb"], back["sandboxCount"]) == (
        before[host_id]["usedVcpus"], before[host_id]["usedMemoryMb"], before[host_id]["sandboxCount"])
    wait_for(lambda: sb["id"] not in cluster.agent_of(host_id).containers(), "the container to go")


def test_six_spawns_spread_over_all_three_hosts(cluster: Cluster) -> None:
    placed = Counter(spawned(cluster, replica=i % 2)["hostId"] for i in range(6))
    assert set(placed) == {agent.host_id for agent in cluster.joined}, placed


def test_no_room_anywhere_is_a_503_at_once_with_nothing_half_made(cluster: Cluster) -> None:
    with ThreadPoolExecutor(6) as pool:
        filled = list(pool.map(lambda i: spawned(cluster, replica=i % 2), range(3 * SLOTS)))
    hosts = by_host(cluster)
    assert all(h["usedVcpus"] == SLOTS for h in hosts.values()), hosts
    started = time.monotonic()
    r = spawn(cluster, replica=1)
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "host_no_capacity", r.text
    assert r.json()["error"]["details"]["transient"] is True, r.text
    assert int(r.headers["Retry-After"]) > 0
    assert elapsed < 1.0, elapsed
    listed = cluster.sandboxes()
    assert not [sb for sb in listed if sb["status"] in ("pending", "booting")], listed
    live = {sb["id"] for sb in listed if sb["status"] == "running"}
    assert live == {sb["id"] for sb in filled}
    assert sorted(c for agent in cluster.joined for c in agent.containers()) == sorted(live)


def test_a_drained_host_takes_nothing_new_keeps_its_sandboxes_and_is_uncordoned(
        cluster: Cluster) -> None:
    target = cluster.joined[0]
    kept = spawned_on(cluster, target)
    with cluster.api(1) as api:
        drained = api.post(f"/v1/hosts/{target.host_id}/drain")
    assert drained.status_code == 200 and drained.json()["status"] == "draining", drained.text
    assert cluster.host(target)["status"] == "draining"
    newcomers = [spawned(cluster, replica=i % 2)["hostId"] for i in range(4)]
    assert target.host_id not in newcomers, newcomers
    assert sandbox(cluster, kept["id"])["status"] == "running"
    assert exec_stdout(cluster, kept["id"], "echo still here") == "still here\n"
    with cluster.api() as api:
        uncordoned = api.post(f"/v1/hosts/{target.host_id}/uncordon")
    assert uncordoned.status_code == 200 and uncordoned.json()["status"] == "ready", uncordoned.text
    assert spawned_on(cluster, target)["hostId"] == target.host_id


def test_exec_and_files_reach_every_host_through_either_replica(cluster: Cluster) -> None:
    for agent in cluster.joined:
        sb = spawned_on(cluster, agent)
        for replica in (0, 1):
            content = f"from replica {replica} to {agent.hostname}".encode()
            with cluster.api(replica) as api:
                r = api.put(f"/v1/sandboxes/{sb['id']}/file", params={"path": f"note-{replica}"},
                            content=content)
                assert r.status_code == 204, r.text
            with cluster.api(1 - replica) as api:
                r = api.get(f"/v1/sandboxes/{sb['id']}/file", params={"path": f"note-{replica}"})
                assert r.status_code == 200 and r.content == content, r.text
            assert exec_stdout(cluster, sb["id"], f"cat note-{replica}", replica) == content.decode()


def test_two_replicas_racing_fifty_spawns_overcommit_no_host_and_deadlines_end_once(
        cluster: Cluster) -> None:
    timeout_seconds = 20
    peaks: dict[str, int] = {}
    racing = threading.Event()
    racing.set()

    def watch() -> None:
        while racing.is_set():
            for host in cluster.hosts():
                peaks[host["id"]] = max(peaks.get(host["id"], 0), host["usedVcpus"] or 0)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda i: spawn(cluster, replica=i % 2, timeoutSeconds=timeout_seconds),
                                    range(50)))
    finally:
        racing.clear()
        watcher.join()
    raced_for = time.monotonic() - started
    made = [r.json() for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code != 201]
    print(f"race: {len(made)} placed, {len(refused)} refused, in {raced_for:.1f} s; peaks {peaks}")
    assert all(r.status_code == 503 and r.json()["error"]["code"] == "host_no_capacity"
               for r in refused), [r.text for r in refused]
    assert all(sb["status"] == "running" for sb in made), made
    # Every slot is taken once, and no host holds more than it has.
    assert len(made) == 3 * SLOTS, (len(made), peaks)
    assert all(count <= SLOTS for count in peaks.values()), peaks
    assert all(count == SLOTS for count in Counter(sb["hostId"] for sb in made).values())
    # No double placement: each sandbox is a container on its own host and on no other.
    for agent in cluster.joined:
        mine = {sb["id"] for sb in made if sb["hostId"] == agent.host_id}
        assert set(agent.containers()) == mine, agent.index

    ids = [sb["id"] for sb in made]
    for sandbox_id in ids:
        assert wait_ended(cluster, sandbox_id, timeout_seconds + 30)["status"] == "terminated"
        ended = ended_events(cluster, sandbox_id)
        assert len(ended) == 1 and ended[0].startswith("timeout"), (sandbox_id, ended)
    wait_for(lambda: not any(agent.containers() for agent in cluster.joined), "the containers to go")


def test_a_template_built_on_one_host_spawns_on_another_through_the_registry(
        cluster: Cluster, registry: str) -> None:
    with cluster.api() as api:
        r = api.post("/v1/templates", json={"name": "multihost", "imageRef": f"{registry}/{BUSYBOX_REPO}",
                                            "steps": [{"run": "echo built > /built.txt"}]})
        assert r.status_code == 201, r.text
        template_id = r.json()["id"]
        try:
            done = wait_built(api, template_id)
            assert done["status"] == "ready", (done["buildError"], done.get("log"))
            assert done["registryRef"].startswith(f"docker://{registry}/qbox/templates/"), done
            holders = wait_for(lambda: [h["id"] for h in cluster.hosts() if template_id in h["templates"]],
                               "the builder to report the image", timeout=15)
            assert len(holders) == 1, holders
            elsewhere = next(agent for agent in cluster.joined if agent.host_id != holders[0])
            sb = spawned_on(cluster, elsewhere, templateId=template_id)
            assert exec_stdout(cluster, sb["id"], "cat /built.txt", replica=1) == "built\n"
            wait_for(lambda: template_id in cluster.host(elsewhere)["templates"],
                     "the other host to report the pulled image", timeout=15)
            api.delete(f"/v1/sandboxes/{sb['id']}")
        finally:
            api.delete(f"/v1/templates/{template_id}")


# --- failures (last: they take replicas and hosts away and bring them back) ---------------------


def test_deadlines_hold_while_every_replica_is_down(cluster: Cluster) -> None:
    agent = cluster.joined[0]
    sb = spawned_on(cluster, agent, timeoutSeconds=DEADLINE_SECONDS)
    spawned_at = time.monotonic()
    for replica in cluster.replicas:
        cluster.stop_replica(replica)
    assert time.monotonic() - spawned_at < DEADLINE_SECONDS - 1, "the replicas took too long to stop"
    # No control plane answers: the agent ends the sandbox at its deadline on its own, long
    # before it would fence itself.
    wait_for(lambda: sb["id"] not in agent.containers(), "the agent to end the sandbox",
             timeout=DEADLINE_SECONDS + 3)
    assert "fenced:" not in agent.log()
    cluster.heal()
    ended = wait_ended(cluster, sb["id"])
    assert ended["status"] == "terminated" and ended["endReason"].startswith("timeout"), ended
    assert ended_events(cluster, sb["id"]) == [ended["endReason"]]
    assert all(h["status"] == "ready" for h in cluster.hosts())


def test_kill_9_of_an_agent_loses_its_host_until_it_comes_back_with_the_same_id(
        cluster: Cluster) -> None:
    agent = cluster.joined[2]
    host_id = agent.host_id
    sb = spawned_on(cluster, agent)
    cluster.kill_agent(agent)
    cluster.wait_status(agent, "unhealthy", timeout=10)
    cluster.wait_status(agent, "down", timeout=LOST_SECONDS + 10)
    lost = wait_ended(cluster, sb["id"])
    assert lost["status"] == "failed" and lost["endReason"].startswith("host lost"), lost
    # Sandboxes outlive their agent: the container is there until an agent removes it.
    assert agent.containers() == [sb["id"]]
    cluster.start_agent(agent, agent.token)
    cluster.wait_status(agent, "ready", timeout=60)
    assert cluster.host_at(agent.address) == cluster.host(agent) and agent.host_id == host_id
    assert len(cluster.hosts()) == 3
    wait_for(lambda: not agent.containers(), "the lost sandbox's container to be removed")
    wait_for(lambda: not [thing for thing in leftovers(cluster) if sb["id"] in thing],
             "the lost sandbox's mounts and cgroups to go", timeout=15)
    assert ended_events(cluster, sb["id"]) == [lost["endReason"]]
    assert spawned_on(cluster, agent)["hostId"] == host_id


def test_a_host_cut_off_is_lost_fences_itself_and_reconciles_when_back(cluster: Cluster) -> None:
    agent = cluster.joined[1]
    sandboxes = [spawned_on(cluster, agent) for _ in range(2)]
    cluster.cut(agent)
    cut_at = time.monotonic()
    cluster.wait_status(agent, "unhealthy", timeout=10)
    unhealthy_after = time.monotonic() - cut_at
    # Once each replica's host monitor has seen it (a tick: half a beat), a call to a sandbox
    # there answers at once: 503 saying why while the host is unhealthy, 409 once it is lost.
    time.sleep(HEARTBEAT_SECONDS)
    started = time.monotonic()
    with cluster.api(1) as api:
        r = api.post(f"/v1/sandboxes/{sandboxes[0]['id']}/exec", json={"cmd": "true"})
    answered_in = time.monotonic() - started
    assert (r.status_code == 503 and r.json()["error"]["details"]["reason"].startswith("host_")
            or r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active"), r.text
    assert answered_in < 1.0, (answered_in, r.text)
    cluster.wait_status(agent, "down", timeout=LOST_SECONDS + 10)
    reasons = []
    for sb in sandboxes:
        lost = wait_ended(cluster, sb["id"])
        assert lost["status"] == "failed" and lost["endReason"].startswith("host lost"), lost
        reasons.append(lost["endReason"])
    lost_after = time.monotonic() - cut_at
    # Once lost, its sandboxes are ended ones.
    with cluster.api() as api:
        r = api.post(f"/v1/sandboxes/{sandboxes[1]['id']}/exec", json={"cmd": "true"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active", r.text
    # Cut off from every control plane, the agent ends its sandboxes itself and says so.
    wait_for(lambda: not agent.containers(), "the agent to fence itself", timeout=30)
    fenced_after = time.monotonic() - cut_at
    fenced = wait_for(lambda: [line for line in agent.log().splitlines() if "fenced:" in line],
                      "the agent to log its fencing", timeout=10)
    assert "killed 2 sandbox" in fenced[0], fenced
    assert agent.running()

    cluster.restore(agent)
    cluster.wait_status(agent, "ready", timeout=30)
    wait_for(lambda: "no longer fenced" in agent.log(), "the agent to log its return", timeout=10)
    host = cluster.host(agent)
    assert (host["sandboxCount"], host["usedVcpus"]) == (0, 0), host
    assert not agent.containers() and not live_on(cluster, agent)
    # A fenced sandbox is stopped, its disk and rootfs kept until the control plane, back in
    # touch, has it removed: then nothing of it is left.
    ids = [sb["id"] for sb in sandboxes]
    wait_for(lambda: not [thing for thing in leftovers(cluster) if any(i in thing for i in ids)],
             "the fenced sandboxes' mounts and cgroups to go", timeout=15)
    for sb, reason in zip(sandboxes, reasons, strict=True):
        assert ended_events(cluster, sb["id"]) == [reason]
    assert spawned_on(cluster, agent)["hostId"] == agent.host_id
    print(f"cut off: unhealthy after {unhealthy_after:.1f} s, sandboxes lost after "
          f"{lost_after:.1f} s, fenced after {fenced_after:.1f} s")


def test_nothing_is_left_behind_by_ended_sandboxes(cluster: Cluster) -> None:
    cluster.kill_live_sandboxes()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not leftovers(cluster), "every container, cgroup and mount to go")
    assert leftovers(cluster) == []
