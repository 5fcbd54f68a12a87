"""The scheduler's decision: which hosts may take a new sandbox, best first.

Pure (no database, no I/O), so it is tested on its own and timed by
bench/bench_scheduler.py. The caller reads the hosts' figures and their
reservations under its lock, asks ``schedule``, and tries the hosts in the
order given (the next one when a host refuses at create time).

A host is a candidate when it is ``ready`` and not draining, offers the
template's runtime, carries every label of the template's host selector, and
has room: its live sandboxes' reservations plus the request stay within
admission's limits for vCPUs, memory and disk (admission.Overcommit), and it
runs fewer sandboxes than its ``max_sandboxes``. Candidates that hold the
template's image come first (no pull before the boot); within each group the
least loaded come first. Load is the headroom a host keeps once the request
is placed, as a fraction of its limit, on its scarcest resource (vCPUs,
memory, disk when reported, sandbox slots when bounded): 1.0 is idle, 0.0
exactly full. Ties go to the lower host id, so the order is reproducible.

With a sample size k (``QBOX_SCHEDULER_SAMPLE``) each group ranks only k
hosts drawn at random ("best of k", as in the power of two choices): past
the one pass that filters and weighs every host, a spawn sorts k hosts
instead of the whole fleet, and concurrent spawns on several replicas spread
instead of all racing for the same emptiest host. The group's other hosts
follow the sampled ones, in the order given, so a retry still has somewhere
to go.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qbox.core.errors import HostNoCapacityError
from qbox.server.db.tables import Host
from qbox.server.services.admission import HostCapacity, Overcommit, Resources, Shortfall, no_capacity

READY = "ready"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One host as the scheduler sees it: its liveness, what it offers and what is taken."""

    id: str
    # As the host monitor judged it: ready | unhealthy | down.
    status: str
    draining: bool
    capacity: HostCapacity
    # What its live sandboxes (booting ones included) reserved.
    reserved: Resources
    sandbox_count: int
    # None: no limit beyond its resources.
    max_sandboxes: int | None
    runtimes: frozenset[str]
    # Image digests its store holds.
    images: frozenset[str]
    labels: Mapping[str, str]
    # This host's own ratios, when they differ from the cluster's (None: the policy's).
    overcommit: Overcommit | None = None

    @classmethod
    def of(cls, row: Host, capacity: HostCapacity, reserved: Resources, sandbox_count: int) -> Candidate:
        """A host's row with its fresh capacity and its live sandboxes' reservations and count."""
        return cls(id=row.id, status=row.status, draining=row.draining, capacity=capacity,
                   reserved=reserved, sandbox_count=sandbox_count, max_sandboxes=row.max_sandboxes,
                   runtimes=frozenset(row.runtimes or ()), images=frozenset(row.images or ()),
                   # A JSON column may hold true where a selector says "true".
                   labels={str(k): _label_text(v) for k, v in (row.labels or {}).items()})


@dataclass(frozen=True, slots=True)
class Request:
    """What a spawn needs from a host."""

    resources: Resources
    runtime: str
    # The template's image ("" while it has none): hosts holding it are preferred.
    image_digest: str = ""
    # The template's hostSelector: every label must be on the host with this value.
    selector: Mapping[str, str] = field(default_factory=dict)
    # Whether a host without the image can pull it (the template has a registry ref);
    # if not, only hosts holding it are candidates (a built-in imported on one host).
    pullable: bool = True


@dataclass(frozen=True, slots=True)
class Policy:
    overcommit: Overcommit
    # Score this many hosts of each group, sampled (0: score them all).
    sample: int = 0
    rng: random.Random = field(default_factory=random.Random, compare=False)


# Why a host was passed over before its room was weighed (the keys of Decision.passed_over).
NOT_READY = "notReady"
DRAINING = "draining"
RUNTIME = "runtime"
SELECTOR = "selector"
IMAGE = "image"


@dataclass(frozen=True, slots=True)
class Decision:
    """The hosts to try, best first; when there are none, why each host was left out."""

    hosts: tuple[str, ...]
    # Hosts left out before their room was weighed, by reason (only reasons that occurred).
    passed_over: Mapping[str, int]
    # The hosts that were candidates but for room: the first resource each lacks.
    shortfalls: tuple[Shortfall, ...]

    def refusal(self, request: Request) -> HostNoCapacityError:
        """The 503 ``host_no_capacity`` that says why no host takes ``request``."""
        return no_capacity(self.shortfalls, request.resources, self.passed_over,
                           runtime=request.runtime, selector=request.selector)


def schedule(hosts: Sequence[Candidate], request: Request, policy: Policy) -> Decision:
    want = request.resources
    runtime = request.runtime
    selector = request.selector.items()
    image = request.image_digest
    # (-headroom, id) of the hosts with room: those holding the image, and the others.
    holders: list[tuple[float, str]] = []
    others: list[tuple[float, str]] = []
    shortfalls: list[Shortfall] = []
    passed_over: dict[str, int] = {}
    for host in hosts:
        reason = None
        if host.status != READY:
            reason = NOT_READY
        elif host.draining:
            reason = DRAINING
        elif runtime not in host.runtimes:
            reason = RUNTIME
        elif selector and not selector <= host.labels.items():
            reason = SELECTOR
        elif image and not request.pullable and image not in host.images:
            reason = IMAGE
        if reason is not None:
            passed_over[reason] = passed_over.get(reason, 0) + 1
            continue
        room = weigh(host, want, host.overcommit or policy.overcommit)
        if isinstance(room, Shortfall):
            shortfalls.append(room)
        elif image and image in host.images:
            holders.append((-room, host.id))
        else:
            others.append((-room, host.id))
    order = _ranked(holders, policy) + _ranked(others, policy)
    return Decision(tuple(order), passed_over, tuple(shortfalls))


def weigh(host: Candidate, want: Resources, overcommit: Overcommit) -> Shortfall | float:
    """The first thing ``host`` lacks for ``want`` (as admission.shortfall, plus sandbox slots),
    or, when it has room, its headroom: what it keeps free once ``want`` is placed, as a
    fraction of the limit, on its scarcest resource (1.0 idle, 0.0 exactly full)."""
    # Written out, without helpers: this runs once per host on every spawn.
    vcpus, memory_mb, disk_mb = overcommit.limits(host.capacity)
    reserved = host.reserved
    cpu_taken = reserved.vcpus + want.vcpus
    if cpu_taken > vcpus:
        return Shortfall(host.id, "vcpus", want.vcpus, reserved.vcpus, vcpus)
    memory_taken = reserved.memory_mb + want.memory_mb
    if memory_taken > memory_mb:
        return Shortfall(host.id, "memoryMb", want.memory_mb, reserved.memory_mb, memory_mb)
    free = (vcpus - cpu_taken) / vcpus if vcpus else 0.0
    left = (memory_mb - memory_taken) / memory_mb if memory_mb else 0.0
    if left < free:
        free = left
    if disk_mb is not None:
        disk_taken = reserved.disk_mb + want.disk_mb
        if disk_taken > disk_mb:
            return Shortfall(host.id, "diskMb", want.disk_mb, reserved.disk_mb, disk_mb)
        left = (disk_mb - disk_taken) / disk_mb if disk_mb else 0.0
        if left < free:
            free = left
    slots = host.max_sandboxes
    if slots is not None:
        if host.sandbox_count >= slots:
            return Shortfall(host.id, "sandboxes", 1, host.sandbox_count, slots)
        left = (slots - host.sandbox_count - 1) / slots
        if left < free:
            free = left
    return free


def _ranked(group: list[tuple[float, str]], policy: Policy) -> list[str]:
    """The group's ids, least loaded first; with a sample size, only that many are ranked."""
    k = policy.sample
    if not k or len(group) <= k:
        return [host_id for _, host_id in sorted(group)]
    picked = policy.rng.sample(range(len(group)), k)
    chosen = set(picked)
    return ([host_id for _, host_id in sorted(group[i] for i in picked)]
            + [host_id for i, (_, host_id) in enumerate(group) if i not in chosen])


def _label_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
