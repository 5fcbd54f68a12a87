"""The scheduler's decision on its own (services/scheduler.py): which hosts may take a spawn,
in which order, and why none does."""

from __future__ import annotations

import random
from typing import Any

import pytest

from qbox.server.db.tables import Host
from qbox.server.services.admission import HostCapacity, Overcommit, Resources, Shortfall
from qbox.server.services.scheduler import Candidate, Decision, Policy, Request, schedule, weigh

GIB = 1024
POLICY = Policy(Overcommit(cpu=1.0, memory=1.0, disk_reserve_mb=0))
NOTHING = Resources(0, 0, 0)
SMALL = Request(Resources(1, GIB, GIB), "crun")


def host(host_id: str, *, reserved: Resources = NOTHING, **fields: Any) -> Candidate:
    """A ready host with 8 vCPUs, 16 GiB of memory and 100 GiB of disk, nothing placed."""
    values: dict[str, Any] = dict(
        id=host_id, status="ready", draining=False,
        capacity=HostCapacity(vcpus=8, memory_mb=16 * GIB, disk_total_mb=100 * GIB, disk_free_mb=100 * GIB),
        reserved=reserved, sandbox_count=0, max_sandboxes=None, runtimes=frozenset({"crun", "runsc"}),
        images=frozenset(), labels={})
    values.update(fields)
    return Candidate(**values)


def headroom(candidate: Candidate) -> float:
    room = weigh(candidate, SMALL.resources, POLICY.overcommit)
    assert isinstance(room, float)
    return room


def order(hosts: list[Candidate], request: Request = SMALL, policy: Policy = POLICY) -> tuple[str, ...]:
    return schedule(hosts, request, policy).hosts


def test_an_idle_host_comes_before_a_loaded_one_and_ties_go_to_the_lower_id() -> None:
    busy = host("a", reserved=Resources(6, 2 * GIB, 0))
    assert order([busy, host("c"), host("b")]) == ("b", "c", "a")


def test_load_is_the_scarcest_resource_after_placing() -> None:
    # a: half its CPUs taken but memory free; b: a quarter of each taken. b keeps more of its scarcest.
    a = host("a", reserved=Resources(4, 0, 0))
    b = host("b", reserved=Resources(2, 4 * GIB, 25 * GIB))
    assert order([a, b]) == ("b", "a")
    assert headroom(a) == pytest.approx(3 / 8)
    assert headroom(b) == pytest.approx(5 / 8)


def test_sandbox_slots_count_as_a_resource() -> None:
    # Same reservations; a has used 9 of its 10 slots.
    a = host("a", sandbox_count=8, max_sandboxes=10)
    b = host("b", sandbox_count=8, max_sandboxes=100)
    assert order([a, b]) == ("b", "a")


def test_a_host_at_its_max_sandboxes_is_full() -> None:
    decision = schedule([host("a", sandbox_count=10, max_sandboxes=10)], SMALL, POLICY)
    assert decision.hosts == ()
    assert decision.shortfalls == (Shortfall("a", "sandboxes", 1, 10, 10),)
    assert order([host("a", sandbox_count=9, max_sandboxes=10)]) == ("a",)


@pytest.mark.parametrize(("reserved", "resource", "requested", "taken", "limit"), [
    (Resources(8, 0, 0), "vcpus", 1, 8, 8),
    (Resources(0, 15 * GIB + 1, 0), "memoryMb", GIB, 15 * GIB + 1, 16 * GIB),
    (Resources(0, 0, 99 * GIB + 1), "diskMb", GIB, 99 * GIB + 1, 100 * GIB),
])
def test_a_host_without_room_is_named_with_the_resource_it_lacks(
        reserved: Resources, resource: str, requested: int, taken: int, limit: int) -> None:
    decision = schedule([host("a", reserved=reserved), host("b")], SMALL, POLICY)
    assert decision.hosts == ("b",)
    assert decision.shortfalls == (Shortfall("a", resource, requested, taken, limit),)


def test_exactly_full_fits_and_overcommit_scales_the_limits() -> None:
    exact = host("a", reserved=Resources(7, 15 * GIB, 99 * GIB))
    assert order([exact]) == ("a",)
    crowded = host("a", reserved=Resources(15, 0, 0))
    assert order([crowded]) == ()
    assert order([crowded], policy=Policy(Overcommit(cpu=2.0, memory=1.0, disk_reserve_mb=0))) == ("a",)


def test_what_the_sandbox_disks_already_hold_is_not_counted_twice() -> None:
    # 20 GiB of the 40 GiB reserved is written: the disk shows 20 GiB less free, the limit is the same.
    written = host("a", reserved=Resources(0, 0, 40 * GIB), capacity=HostCapacity(
        vcpus=8, memory_mb=16 * GIB, disk_total_mb=100 * GIB, disk_free_mb=60 * GIB, sandbox_disks_mb=20 * GIB))
    assert order([written], Request(Resources(1, GIB, 40 * GIB), "crun")) == ("a",)
    assert order([written], Request(Resources(1, GIB, 40 * GIB + 1), "crun")) == ()


def test_a_hosts_own_overcommit_overrides_the_policy() -> None:
    lenient = host("a", reserved=Resources(15, 0, 0), overcommit=Overcommit(2.0, 1.0, 0))
    assert order([lenient, host("b", reserved=Resources(15, 0, 0))]) == ("a",)


def test_the_disk_reserve_is_kept_and_an_unreported_disk_is_not_checked() -> None:
    policy = Policy(Overcommit(cpu=1.0, memory=1.0, disk_reserve_mb=99 * GIB + 1))
    assert order([host("a")], policy=policy) == ()
    unknown = host("a", capacity=HostCapacity(vcpus=8, memory_mb=16 * GIB))
    assert order([unknown], policy=policy) == ("a",)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"status": "unhealthy"}, "notReady"),
    ({"status": "down"}, "notReady"),
    ({"draining": True}, "draining"),
    ({"runtimes": frozenset({"runsc"})}, "runtime"),
    ({"labels": {"gpu": "false"}}, "selector"),
])
def test_hosts_that_may_not_take_it_are_passed_over_with_their_reason(fields: dict[str, Any],
                                                                       reason: str) -> None:
    request = Request(SMALL.resources, "crun", selector={"gpu": "true"})
    decision = schedule([host("a", **fields), host("b", labels={"gpu": "true"})], request, POLICY)
    assert decision.hosts == ("b",)
    assert decision.passed_over == {reason: 1}
    assert decision.shortfalls == ()


def test_a_host_left_out_for_two_reasons_is_counted_once_and_never_weighed() -> None:
    # Down, draining and full: counted as not ready only, and no shortfall is reported.
    gone = host("a", status="down", draining=True, reserved=Resources(8, 0, 0))
    decision = schedule([gone], SMALL, POLICY)
    assert decision.passed_over == {"notReady": 1}
    assert decision.shortfalls == ()


def test_every_label_of_the_selector_must_match_and_other_labels_do_not_matter() -> None:
    request = Request(SMALL.resources, "crun", selector={"gpu": "true", "zone": "b"})
    hosts = [host("a", labels={"gpu": "true"}), host("b", labels={"gpu": "true", "zone": "b", "disk": "ssd"}),
             host("c", labels={"gpu": "true", "zone": "a"})]
    decision = schedule(hosts, request, POLICY)
    assert decision.hosts == ("b",)
    assert decision.passed_over == {"selector": 2}


def test_hosts_holding_the_image_come_first_even_when_busier() -> None:
    request = Request(SMALL.resources, "crun", image_digest="sha256:aa")
    holder = host("z", reserved=Resources(6, 12 * GIB, 0), images=frozenset({"sha256:aa"}))
    assert order([host("a"), holder, host("b")], request) == ("z", "a", "b")
    # A template without an image yet prefers nobody.
    assert order([host("a"), holder, host("b")]) == ("a", "b", "z")


def test_without_a_registry_copy_only_hosts_holding_the_image_may_take_it() -> None:
    request = Request(SMALL.resources, "crun", image_digest="sha256:aa", pullable=False)
    holder = host("z", reserved=Resources(6, 0, 0), images=frozenset({"sha256:aa"}))
    decision = schedule([host("a"), holder], request, POLICY)
    assert decision.hosts == ("z",)
    assert decision.passed_over == {"image": 1}
    refused = schedule([host("a"), host("b")], request, POLICY)
    assert refused.hosts == () and refused.passed_over == {"image": 2}
    assert "2 hosts without the template's image" in refused.refusal(request).message
    # A template with no image yet (or a pullable one) is not held back.
    assert order([host("a")], Request(SMALL.resources, "crun", pullable=False)) == ("a",)


def test_a_full_image_holder_is_not_preferred() -> None:
    request = Request(SMALL.resources, "crun", image_digest="sha256:aa")
    full = host("z", reserved=Resources(8, 0, 0), images=frozenset({"sha256:aa"}))
    decision = schedule([full, host("a")], request, POLICY)
    assert decision.hosts == ("a",)
    assert [s.host_id for s in decision.shortfalls] == ["z"]


def fleet(count: int) -> list[Candidate]:
    rng = random.Random(7)
    return [host(f"h{n:04d}", reserved=Resources(rng.randint(0, 7), rng.randint(0, 15) * GIB, 0))
            for n in range(count)]


def test_best_of_k_ranks_k_sampled_hosts_and_returns_every_other_after_them() -> None:
    hosts = fleet(50)
    decision = schedule(hosts, SMALL, Policy(POLICY.overcommit, sample=3, rng=random.Random(1)))
    assert sorted(decision.hosts) == sorted(h.id for h in hosts)
    by_id = {h.id: h for h in hosts}
    best = [headroom(by_id[i]) for i in decision.hosts[:3]]
    assert best == sorted(best, reverse=True)
    # The rest keep the order they were given in.
    rest = [h.id for h in hosts if h.id not in decision.hosts[:3]]
    assert list(decision.hosts[3:]) == rest


def test_sampling_is_deterministic_for_a_seed_and_spreads_across_seeds() -> None:
    hosts = fleet(200)

    def first(seed: int) -> str:
        return schedule(hosts, SMALL, Policy(POLICY.overcommit, sample=2, rng=random.Random(seed))).hosts[0]

    assert first(5) == first(5)
    assert len({first(seed) for seed in range(20)}) > 5
    # Scoring all of them always picks the same, least loaded host.
    firsts = {order(hosts, policy=Policy(POLICY.overcommit, rng=random.Random(seed)))[0] for seed in range(5)}
    assert firsts == {min(hosts, key=lambda h: (-headroom(h), h.id)).id}


def test_sampling_keeps_the_image_preference() -> None:
    request = Request(SMALL.resources, "crun", image_digest="sha256:aa")
    hosts = fleet(30)
    hosts[17] = host("holder", reserved=Resources(7, 0, 0), images=frozenset({"sha256:aa"}))
    policy = Policy(POLICY.overcommit, sample=2, rng=random.Random(3))
    assert schedule(hosts, request, policy).hosts[0] == "holder"


def test_no_host_at_all_is_an_empty_decision() -> None:
    assert schedule([], SMALL, POLICY) == Decision((), {}, ())


def test_the_refusal_says_why_no_host_takes_it() -> None:
    request = Request(SMALL.resources, "runsc", selector={"gpu": "true"})
    hosts = [host("a", status="down"), host("b", draining=True), host("c", runtimes=frozenset({"crun"})),
             host("d"), host("e", labels={"gpu": "true"}, reserved=Resources(8, 0, 0))]
    decision = schedule(hosts, request, POLICY)
    assert decision.hosts == ()
    error = decision.refusal(request)
    assert error.code == "host_no_capacity" and error.status == 503
    assert error.details["reasons"] == {"notReady": 1, "draining": 1, "runtime": 1, "selector": 1, "full": 1}
    assert error.details["hostSelector"] == {"gpu": "true"}
    assert error.details["transient"] is True and error.retry_after == 5
    assert "vcpus 1 requested, 8 of 8 reserved on host e" in error.message
    assert "1 host without runtime runsc" in error.message
    assert "1 host not matching the template's host selector gpu=true" in error.message


def test_a_selector_no_host_matches_is_said_plainly() -> None:
    request = Request(SMALL.resources, "crun", selector={"gpu": "true"})
    error = schedule([host("a"), host("b")], request, POLICY).refusal(request)
    assert error.message == ("no host can run the sandbox: 2 hosts not matching the template's "
                             "host selector gpu=true")
    assert error.details["reasons"] == {"selector": 2}


def test_no_host_at_all_is_refused_as_before() -> None:
    error = schedule([], SMALL, POLICY).refusal(SMALL)
    assert error.message == "no host is online to run the sandbox"
    assert "reasons" not in error.details


def test_a_candidate_is_built_from_a_hosts_row() -> None:
    row = Host(id="h1", hostname="h", address="a", status="ready", draining=True, max_sandboxes=4,
               runtimes=["crun"], images=["sha256:aa"], labels={"gpu": True, "zone": "b"})
    candidate = Candidate.of(row, HostCapacity(2, GIB), Resources(1, 2, 3), 3)
    assert candidate == host("h1", draining=True, capacity=HostCapacity(2, GIB), reserved=Resources(1, 2, 3),
                             sandbox_count=3, max_sandboxes=4, runtimes=frozenset({"crun"}),
                             images=frozenset({"sha256:aa"}), labels={"gpu": "true", "zone": "b"})
