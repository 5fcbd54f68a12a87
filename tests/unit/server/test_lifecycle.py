"""The control plane's sandbox lifecycle: the table, then each change against a real database."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from qbox.core.errors import HostUnavailableError
from qbox.core.states import LIVE_STATES, TERMINAL_STATES, SandboxState
from qbox.core.timefmt import utcnow
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import (
    TABLE,
    Change,
    LifecycleEvent,
    SandboxLifecycle,
    booting_row,
    claimed_row,
    next_state,
)
from tests.unit.server.service_db import HostRecorder, add_sandbox, log_of, row, service_context

E = LifecycleEvent
S = SandboxState
BOOTING = {S.BOOTING}

# What the lifecycle promises, written out on its own: event -> (from, to, log level).
EXPECTED: dict[LifecycleEvent, tuple[set[SandboxState], SandboxState, str]] = {
    E.BOOTED: (BOOTING, S.RUNNING, "info"),
    E.BOOT_FAILED: (BOOTING, S.FAILED, "error"),
    E.BOOT_INTERRUPTED: (BOOTING, S.FAILED, "info"),
    E.START_COMMAND_FAILED: (BOOTING, S.FAILED, "error"),
    E.NEVER_READY: (BOOTING, S.FAILED, "error"),
    E.KILL_REQUESTED: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.KILLED, "info"),
    E.DEADLINE_REACHED: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.TERMINATED,
                         "info"),
    E.ENDED_ON_HOST: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.FAILED, "error"),
    E.MISSING_ON_HOST: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.FAILED, "error"),
    E.BOOT_LOST: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.FAILED, "error"),
    E.HOST_LOST: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.FAILED, "error"),
    E.HOST_REMOVED: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.FAILED, "error"),
    E.CLAIM_FAILED: ({S.PENDING, S.BOOTING, S.RUNNING, S.PAUSED, S.SNAPSHOTTED}, S.FAILED, "error"),
}

# The facts each event's reason names, and the reason they make.
REASONS: dict[LifecycleEvent, tuple[dict[str, object], str]] = {
    E.BOOTED: ({}, "sandbox running"),
    E.BOOT_FAILED: ({"error": "crun said no"}, "boot failed: crun said no"),
    E.BOOT_INTERRUPTED: ({}, "boot interrupted: control plane shutting down"),
    E.START_COMMAND_FAILED: ({"error": "no such file"}, "startCmd could not be started: no such file"),
    E.NEVER_READY: ({"why": "readyCmd did not exit 0 within 1s (last: exit code 4)"},
                    "readyCmd did not exit 0 within 1s (last: exit code 4)"),
    E.KILL_REQUESTED: ({"api_key": "key_1"}, "killed by DELETE (api key key_1)"),
    E.DEADLINE_REACHED: ({"at": "2026-12-06T04:00:00.000000Z"},
                         "timeout: auto-killed at 2026-12-06T04:00:00.000000Z (deadline passed)"),
    E.ENDED_ON_HOST: ({"why": "out of memory"}, "failed: out of memory"),
    E.MISSING_ON_HOST: ({"host": "h1"}, "lost: host h1 no longer has this sandbox"),
    E.BOOT_LOST: ({"host": "h1"},
                  "lost: its boot on host h1 did not finish (the control plane stopped)"),
    E.HOST_LOST: ({"host": "h1", "seconds": 61}, "host lost: host h1 sent no heartbeat for 61 s"),
    E.HOST_REMOVED: ({"host": "h1"}, "host removed: host h1 was removed by an operator"),
    E.CLAIM_FAILED: ({"error": "gone"}, "boot failed: its pooled sandbox could not be claimed: gone"),
}

PAIRS = list(itertools.product(SandboxState, LifecycleEvent))
ALLOWED = [(state, event) for state, event in PAIRS if state in EXPECTED[event][0]]
REFUSED = [(state, event) for state, event in PAIRS if state not in EXPECTED[event][0]]


def change(event: LifecycleEvent) -> Change:
    return Change.of(event, **REASONS[event][0])


@pytest.fixture
async def ctx(tmp_path: Path, database: str | None) -> AsyncIterator[ServiceContext]:
    async for context in service_context(tmp_path, database):
        yield context


# --- the table -----------------------------------------------------------------


def test_the_table_has_every_event_and_only_the_expected_transitions() -> None:
    assert set(TABLE) == set(LifecycleEvent) == set(EXPECTED)
    for state, event in PAIRS:
        sources, target, _level = EXPECTED[event]
        assert next_state(state, event) == (target if state in sources else None), (state, event)


def test_an_ended_sandbox_never_changes_again() -> None:
    assert TERMINAL_STATES == {S.TERMINATED, S.KILLED, S.FAILED}
    assert LIVE_STATES == set(SandboxState) - TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert [next_state(state, event) for event in LifecycleEvent] == [None] * len(LifecycleEvent)


def test_reasons_are_the_documented_words() -> None:
    for event, (facts, reason) in REASONS.items():
        assert Change.of(event, **facts).reason == reason
    # The prefixes docs/api.md, docs/operations.md and the tests promise.
    assert change(E.DEADLINE_REACHED).reason.startswith("timeout")
    assert "DELETE" in change(E.KILL_REQUESTED).reason
    assert change(E.MISSING_ON_HOST).reason.startswith("lost: ")
    assert change(E.BOOT_LOST).reason.startswith("lost: ")
    assert change(E.HOST_LOST).reason.startswith("host lost")


def test_a_new_sandbox_row_is_booting() -> None:
    assert booting_row(id="sb_x").status == S.BOOTING


def test_a_claimed_pooled_sandbox_row_is_running_and_from_the_pool() -> None:
    row = claimed_row(id="sb_x")
    assert row.status == S.RUNNING and row.from_pool is True


# --- against the database --------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), ALLOWED, ids=[f"{s}-{e}" for s, e in ALLOWED])
async def test_every_allowed_transition_changes_the_row_once(ctx: ServiceContext, state: SandboxState,
                                                             event: LifecycleEvent) -> None:
    _sources, target, level = EXPECTED[event]
    sandbox_id = await add_sandbox(ctx, state, deadline=utcnow() + timedelta(minutes=5))
    lifecycle = SandboxLifecycle(ctx)
    assert await lifecycle.apply(sandbox_id, change(event)) is True
    sandbox = await row(ctx, sandbox_id)
    assert sandbox.status == target
    reason = REASONS[event][1]
    if target in TERMINAL_STATES:
        assert (sandbox.end_reason, sandbox.deadline_at) == (reason, None)
        assert sandbox.ended_at is not None
    else:
        assert sandbox.end_reason is None and sandbox.ended_at is None
        assert sandbox.deadline_at is not None
    assert (sandbox.booted_at is not None) == (target == S.RUNNING)
    assert await log_of(ctx, sandbox_id) == [(level, reason)]
    # The same event again finds the sandbox moved on: nothing changes.
    assert await lifecycle.apply(sandbox_id, change(event)) is False
    assert await log_of(ctx, sandbox_id) == [(level, reason)]


@pytest.mark.parametrize(("state", "event"), REFUSED, ids=[f"{s}-{e}" for s, e in REFUSED])
async def test_a_refused_transition_changes_nothing(ctx: ServiceContext, state: SandboxState,
                                                    event: LifecycleEvent) -> None:
    sandbox_id = await add_sandbox(ctx, state)
    before = await row(ctx, sandbox_id)
    assert await SandboxLifecycle(ctx).apply(sandbox_id, change(event)) is False
    after = await row(ctx, sandbox_id)
    assert (after.status, after.end_reason, after.ended_at, after.booted_at) == \
        (before.status, before.end_reason, before.ended_at, before.booted_at)
    assert await log_of(ctx, sandbox_id) == []


async def test_racing_ends_end_a_sandbox_once(ctx: ServiceContext) -> None:
    host = HostRecorder()
    ctx.agents.add("h1", host)  # type: ignore[arg-type]
    lifecycle = SandboxLifecycle(ctx)
    ended: list[str] = []
    lifecycle.when_ended(ended.append)
    sandbox_id = await add_sandbox(ctx, S.RUNNING, host_id="h1")
    results = await asyncio.gather(*(lifecycle.end(sandbox_id, change(event)) for event in
                                     (E.KILL_REQUESTED, E.DEADLINE_REACHED, E.ENDED_ON_HOST,
                                      E.MISSING_ON_HOST)))
    assert sorted(results) == [False, False, False, True]
    assert ended == [sandbox_id] and host.deleted == [sandbox_id]
    log = await log_of(ctx, sandbox_id)
    assert len(log) == 1
    assert (await row(ctx, sandbox_id)).end_reason == log[0][1]


async def test_a_boot_that_finishes_after_a_kill_does_not_revive_the_sandbox(ctx: ServiceContext) -> None:
    lifecycle = SandboxLifecycle(ctx)
    sandbox_id = await add_sandbox(ctx, S.BOOTING, host_id="h1")
    assert await lifecycle.end(sandbox_id, change(E.KILL_REQUESTED)) is True
    assert await lifecycle.apply(sandbox_id, change(E.BOOTED)) is False
    assert (await row(ctx, sandbox_id)).status == S.KILLED


async def test_end_removes_only_a_running_sandbox_from_its_host(ctx: ServiceContext) -> None:
    host = HostRecorder()
    ctx.agents.add("h1", host)  # type: ignore[arg-type]
    lifecycle = SandboxLifecycle(ctx)
    booting = await add_sandbox(ctx, S.BOOTING, host_id="h1")
    running = await add_sandbox(ctx, S.RUNNING, host_id="h1")
    kept_for_the_caller = await add_sandbox(ctx, S.RUNNING, host_id="h1")
    assert await lifecycle.end(booting, change(E.KILL_REQUESTED))  # its boot task removes it
    assert await lifecycle.end(running, change(E.KILL_REQUESTED))
    assert await lifecycle.end(kept_for_the_caller, change(E.ENDED_ON_HOST), remove_from_host=False)
    assert host.deleted == [running]


async def test_end_of_an_unknown_or_ended_sandbox_is_false(ctx: ServiceContext) -> None:
    lifecycle = SandboxLifecycle(ctx)
    hooks: list[str] = []
    lifecycle.when_ended(hooks.append)
    killed = await add_sandbox(ctx, S.KILLED)
    assert await lifecycle.end("sb_nothere", change(E.KILL_REQUESTED)) is False
    assert await lifecycle.end(killed, change(E.DEADLINE_REACHED)) is False
    assert hooks == []


async def test_a_failed_removal_is_written_to_the_sandbox_log(ctx: ServiceContext) -> None:
    ctx.agents.add("h1", HostRecorder(fail_with=HostUnavailableError("host h1 is down")))  # type: ignore[arg-type]
    sandbox_id = await add_sandbox(ctx, S.RUNNING, host_id="h1")
    assert await SandboxLifecycle(ctx).end(sandbox_id, change(E.KILL_REQUESTED)) is True
    assert (await row(ctx, sandbox_id)).status == S.KILLED
    assert await log_of(ctx, sandbox_id) == [
        ("info", "killed by DELETE (api key key_1)"),
        ("error", "removal from host failed: host h1 is down (reconcile retries at the next start)"),
    ]
