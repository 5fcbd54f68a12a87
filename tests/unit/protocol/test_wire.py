"""The protocol's bodies on the wire: what is left out, how times and secrets travel."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import SecretStr

from qbox.protocol.host import Health
from qbox.protocol.images import BUILD_EVENT, BuildRequest, BuildStep, RegistryLogin
from qbox.protocol.processes import CommandStatus, ExecRequest, ExitEvent, LogOffsets
from qbox.protocol.sandboxes import SandboxInfo
from qbox.protocol.wire import ndjson_line

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_optional_members_are_left_out_not_sent_as_null() -> None:
    assert SandboxInfo(id="sb_1", status="running", address=None).wire() == {
        "id": "sb_1", "status": "running", "address": None}
    stopped = SandboxInfo(id="sb_1", status="stopped", address="10.0.0.2", exit_reason="oom")
    assert stopped.wire()["exitReason"] == "oom"
    assert ExecRequest(cmd="true").wire() == {"cmd": "true", "args": []}
    assert ExitEvent(exit_code=0, signal=0, oom_killed=False).wire() == {
        "type": "exit", "exitCode": 0, "signal": 0, "oomKilled": False}
    assert LogOffsets().wire() == {} and not LogOffsets().given
    assert LogOffsets(offset=0).given and LogOffsets(stdout_offset=3, offset=1).stderr_from == 1


def test_times_have_six_fractional_digits_and_read_back() -> None:
    status = CommandStatus(pid=7, command=["true"], started_at=STARTED, alive=True, exit_code=0,
                           signal=0, oom_killed=False)
    wire = status.wire()
    assert wire["startedAt"] == "2026-01-02T03:04:05.000000Z" and "endedAt" not in wire
    assert CommandStatus.model_validate(wire) == status


def test_a_password_travels_to_the_agent_but_never_into_a_repr() -> None:
    request = BuildRequest(name="web", ref="r/web:1",
                           credentials=RegistryLogin(username="u", password=SecretStr("hunter2")))
    assert "hunter2" not in repr(request) and "hunter2" not in str(request)
    assert request.wire()["credentials"] == {"username": "u", "password": "hunter2"}


def test_a_build_step_is_sent_with_only_what_it_has() -> None:
    assert BuildStep(run="make").wire() == {"run": "make"}
    assert BUILD_EVENT.validate_python({"type": "log", "line": "x"}).wire() == {"type": "log", "line": "x"}


def test_event_lines_keep_the_agents_spacing() -> None:
    line = ndjson_line(ExitEvent(exit_code=1, signal=0, oom_killed=False, timed_out=True))
    assert line == b'{"type": "exit", "exitCode": 1, "signal": 0, "oomKilled": false, "timedOut": true}\n'
    assert json.loads(line)["timedOut"] is True


def test_a_garbled_capacity_report_reads_as_none() -> None:
    base = {"version": "1", "runtime": "crun", "runtimes": ["crun"], "sandboxes": 0}
    assert Health.model_validate({**base, "capacity": {"vcpus": "many"}}).capacity is None
    full = {"vcpus": 2, "memoryMb": 1024, "diskTotalMb": 10, "diskFreeMb": 5}
    assert Health.model_validate({**base, "capacity": full}).capacity is not None
