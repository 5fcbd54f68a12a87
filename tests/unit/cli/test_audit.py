"""``qbox audit``: time bounds, filters, paging, --follow (with an injected clock) and verify."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from click.testing import CliRunner, Result

from qbox.cli.audit import parse_time_bound
from qbox.cli.environment import Environment
from qbox.cli.exit_codes import ExitCode
from qbox.cli.main import main
from qbox.core.timefmt import from_wire, utcnow
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import API_KEY, BASE_URL, FakeClock, FakeServer, error, reply
from tests.unit.sdk.test_access import entry

AUDIT = "/v1/audit"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_bound(value: str, expected: datetime) -> None:
    assert parse_time_bound(value, NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "1y", "-1h", "h", ""])
def test_parse_time_bound_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_time_bound(value, NOW)


def test_since_is_sent_as_from(cli: Cli) -> None:
    cli.server.on("GET", AUDIT, reply(200, {"data": [], "nextCursor": None}))
    assert cli("audit", "logs", "--since", "2h").exit_code == 0
    sent = from_wire(cli.server.last("GET", AUDIT).params["from"])
    assert abs(sent - (utcnow() - timedelta(hours=2))) < timedelta(minutes=1)
    cli("audit", "logs", "--since", "2026-01-02T03:04:05Z", "--until", "2026-01-03T00:00:00+01:00")
    params = cli.server.last("GET", AUDIT).params
    assert (params["from"], params["to"]) == ("2026-01-02T03:04:05.000000+00:00", "2026-01-02T23:00:00.000000+00:00")


def test_bad_since_is_a_usage_error(cli: Cli) -> None:
    result = cli("audit", "logs", "--since", "yesterday")
    assert result.exit_code == ExitCode.USAGE and "ISO 8601" in result.stderr
    assert cli.server.seen == []


def test_logs_lines_filters_and_more_hint(cli: Cli) -> None:
    page = {"data": [entry(2, targetId=None), entry(1, actorEmail=None, outcome=403)], "nextCursor": "c1"}
    cli.server.on("GET", AUDIT, reply(200, page))
    result = cli("audit", "logs", "--user", "usr_1", "--action", "sandbox.create", "--target", "sb_1",
                 "--limit", "2", "--cursor", "c0", tty=True)  # fmt: skip
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "2026-01-02 03:04:05  ada@example.com  sandbox.create  -  201",
        "2026-01-02 03:04:05  usr_1  sandbox.create  sb_1  403",
    ]
    assert "--cursor c1" in result.stderr
    assert cli.server.last("GET", AUDIT).params == {
        "actorId": "usr_1", "action": "sandbox.create", "targetId": "sb_1", "limit": "2", "cursor": "c0",
    }  # fmt: skip


def test_logs_json_is_the_page(cli: Cli) -> None:
    page = {"data": [entry(1)], "nextCursor": None}
    cli.server.on("GET", AUDIT, reply(200, page))
    assert json.loads(cli("audit", "logs").stdout) == page
    assert cli.server.last("GET", AUDIT).params == {"limit": "100"}


def test_logs_forbidden_exits_3(cli: Cli) -> None:
    cli.server.on("GET", AUDIT, error(403, "forbidden", "api key missing required scope: audit:read"))
    assert cli("audit", "logs", tty=True).exit_code == ExitCode.AUTH


class InterruptingClock(FakeClock):
    """Lets ``polls`` sleeps pass, then behaves like Ctrl-C."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls

    def sleep(self, seconds: float) -> None:
        if len(self.sleeps) == self.polls:
            raise KeyboardInterrupt
        super().sleep(seconds)


def follow(server: FakeServer, clock: FakeClock, *args: str, tty: bool = True) -> Result:
    env = Environment(
        environ={"QBOX_API_KEY": API_KEY, "QBOX_BASE_URL": BASE_URL},
        transport=httpx.MockTransport(server.handle),
        clock=clock,
        stdout_isatty=tty,
        stdin_isatty=False,
    )
    return CliRunner().invoke(main, ["audit", "logs", "-f", *args], obj=env, catch_exceptions=False)


T1, T2, T3 = "2026-01-02T03:04:01.000000Z", "2026-01-02T03:04:02.000000Z", "2026-01-02T03:04:03.000000Z"


def test_follow_prints_only_new_entries_oldest_first_and_exits_0_on_ctrl_c() -> None:
    server = FakeServer()
    server.on(
        "GET",
        AUDIT,
        reply(200, {"data": [entry(2, T2), entry(1, T1)], "nextCursor": "older"}),
        reply(200, {"data": [entry(3, T3), entry(2, T2)], "nextCursor": None}),  # from is inclusive
        reply(200, {"data": [entry(4, T3), entry(3, T3)], "nextCursor": None}),  # same timestamp, newer entry
        reply(200, {"data": [entry(4, T3)], "nextCursor": None}),
    )
    clock = InterruptingClock(polls=3)
    result = follow(server, clock, "--interval", "5", "--action", "sandbox.create")
    assert result.exit_code == 0
    assert [line.split()[4] for line in result.stdout.splitlines()] == ["sb_1", "sb_2", "sb_3", "sb_4"]
    assert clock.sleeps == [5.0, 5.0, 5.0]
    sent = [s.params for s in server.seen]
    assert "from" not in sent[0] and sent[0]["action"] == "sandbox.create"
    assert [p["from"] for p in sent[1:]] == [
        "2026-01-02T03:04:02.000000+00:00",
        "2026-01-02T03:04:03.000000+00:00",
        "2026-01-02T03:04:03.000000+00:00",
    ]
    assert all(p["action"] == "sandbox.create" and "cursor" not in p for p in sent[1:])


def test_follow_reads_every_page_of_a_burst() -> None:
    server = FakeServer()
    pages = {
        None: {"data": [entry(1, T1)], "nextCursor": None},
        "p2": {"data": [entry(2, T2)], "nextCursor": None},
    }
    polls = iter([pages[None], {"data": [entry(3, T3)], "nextCursor": "p2"}, pages["p2"]])
    server.on("GET", AUDIT, lambda request: reply(200, next(polls)))
    result = follow(server, InterruptingClock(polls=1), "--limit", "1")
    assert [line.split()[4] for line in result.stdout.splitlines()] == ["sb_1", "sb_2", "sb_3"]


def test_follow_json_is_one_object_per_line() -> None:
    server = FakeServer()
    server.on("GET", AUDIT, reply(200, {"data": [entry(2, T2), entry(1, T1)], "nextCursor": None}))
    result = follow(server, InterruptingClock(polls=0), tty=False)
    assert result.exit_code == 0
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]


def test_follow_rejects_until_and_cursor(cli: Cli) -> None:
    assert cli("audit", "logs", "-f", "--until", "1h").exit_code == ExitCode.USAGE
    assert cli("audit", "logs", "-f", "--cursor", "c").exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_verify(cli: Cli) -> None:
    ok = {"ok": True, "checked": 12, "firstBadId": None, "reason": None}
    broken = {"ok": False, "checked": 7, "firstBadId": 7, "reason": "hash mismatch"}
    cli.server.on("GET", AUDIT + "/verify", reply(200, ok), reply(200, broken))
    good = cli("audit", "verify", tty=True)
    assert good.exit_code == 0 and "12 entries checked" in good.stdout
    bad = cli("audit", "verify", tty=True)
    assert bad.exit_code == ExitCode.ERROR
    assert "entry 7" in bad.stdout and "hash mismatch" in bad.stdout
    as_json = cli("audit", "verify", "--json")
    assert as_json.exit_code == ExitCode.ERROR and json.loads(as_json.stdout) == broken
