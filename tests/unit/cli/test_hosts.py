"""``qbox hosts`` against the real control plane over its in-process agent: tables and JSON, drain and
uncordon as the API then reports them, removal after a confirmation, join tokens printed once, --watch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from qbox.cli.environment import Environment
from qbox.cli.exit_codes import ExitCode
from qbox.cli.hosts import HOST_COLUMNS, TOKEN_COLUMNS
from qbox.cli.main import main
from qbox.cli.watch import CLEAR_SCREEN
from tests.unit.cli.test_audit import InterruptingClock
from tests.unit.sdk.fakes import FakeClock
from tests.unit.sdk.test_hosts import heartbeat, join
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)  # the CLI's side: one database is enough


def qbox(h: Harness, *args: str, key: str | None = None, tty: bool = False, stdin_tty: bool = False,
         clock: FakeClock | None = None, input: str | None = None) -> Result:
    """``qbox ARGS`` in-process, its requests served by the app."""
    env = Environment(
        environ={"QBOX_API_KEY": key or h.admin_key, "QBOX_BASE_URL": "http://testserver", "QBOX_MAX_RETRIES": "0"},
        transport=httpx.MockTransport(lambda request: h.client.send(request)),
        clock=clock or FakeClock(),
        stdout_isatty=tty,
        stdin_isatty=stdin_tty,
    )
    # color: keep the escape codes a terminal would get (click strips them for anything else).
    return CliRunner().invoke(main, list(args), obj=env, input=input, color=tty, catch_exceptions=False)


def api(h: Harness, path: str) -> Any:
    answer = h.client.get(path, headers=h.auth())
    assert answer.status_code == 200, answer.text
    return answer.json()


def host_id(h: Harness) -> str:
    (host,) = api(h, "/v1/hosts")
    return str(host["id"])


def test_list_and_get_as_tables_and_json(harness: Harness) -> None:
    hid = host_id(harness)
    header, *rows = qbox(harness, "hosts", "list", tty=True).stdout.splitlines()
    assert header.split("  ")[0] == "ID" and all(column in header for column in HOST_COLUMNS)
    assert len(rows) == 1 and rows[0].split()[0] == hid and rows[0].split()[2] == "ready"
    listed = json.loads(qbox(harness, "hosts", "list").stdout)
    assert [h["id"] for h in listed] == [hid] and listed[0]["kind"] == "embedded"
    assert qbox(harness, "hosts", "list", "--status", "down", "--json").stdout.strip() == "[]"
    shown = qbox(harness, "hosts", "get", hid, tty=True)
    assert shown.exit_code == 0 and hid in shown.stdout
    assert any(line.split()[:2] == ["Status", "ready"] for line in shown.stdout.splitlines())
    got = json.loads(qbox(harness, "hosts", "get", hid).stdout)
    assert (got["id"], got["status"], got["totalVcpus"]) == (hid, "ready", listed[0]["totalVcpus"])


def test_drain_and_uncordon_change_what_the_api_reports(harness: Harness) -> None:
    hid = host_id(harness)
    drained = qbox(harness, "hosts", "drain", hid, tty=True)
    assert (drained.exit_code, drained.stdout) == (0, f"{hid} is draining\n")
    assert api(harness, f"/v1/hosts/{hid}")["status"] == "draining"
    assert [h["id"] for h in json.loads(qbox(harness, "hosts", "list", "--status", "draining").stdout)] == [hid]
    back = json.loads(qbox(harness, "hosts", "uncordon", hid, "--json").stdout)
    assert back["id"] == hid and back["status"] == "ready"
    assert api(harness, f"/v1/hosts/{hid}")["status"] == "ready"


def test_unknown_hosts_exit_4_and_members_exit_3(harness: Harness) -> None:
    assert qbox(harness, "hosts", "get", "host_nope").exit_code == ExitCode.NOT_FOUND
    assert qbox(harness, "hosts", "drain", "host_nope").exit_code == ExitCode.NOT_FOUND
    _, key = add_user_with_key(harness.settings.data_dir)
    hid = host_id(harness)
    for args in (("list",), ("get", hid), ("drain", hid), ("token", "create"), ("token", "list")):
        refused = qbox(harness, "hosts", *args, key=key, tty=True)
        assert refused.exit_code == ExitCode.AUTH and "forbidden" in refused.stderr, args
    assert api(harness, f"/v1/hosts/{hid}")["status"] == "ready"


def test_token_create_prints_the_token_once_and_the_join_command(harness: Harness) -> None:
    made = qbox(harness, "hosts", "token", "create", "--ttl", "2m", "--label", "gpu=true", "--label", "zone=b",
                tty=True)
    assert made.exit_code == 0, made.stderr
    token = made.stdout.strip()
    assert made.stdout == token + "\n" and "not shown again" in made.stderr
    assert token in made.stderr.splitlines()[-1]  # the join command
    (listed,) = api(harness, "/v1/host-tokens")
    assert listed["status"] == "active" and listed["labels"] == {"gpu": "true", "zone": "b"}
    table = qbox(harness, "hosts", "token", "list", tty=True).stdout
    assert table.split("\n")[0].split() == [w for c in TOKEN_COLUMNS for w in c.split()]
    assert listed["id"] in table and token not in table
    joined = join(harness, token)
    assert joined.status_code == 201, joined.text
    used = json.loads(qbox(harness, "hosts", "token", "list").stdout)
    assert [(t["status"], t["hostId"]) for t in used] == [("used", joined.json()["hostId"])]


def test_token_create_json_revoke_and_bad_options(harness: Harness) -> None:
    made = json.loads(qbox(harness, "hosts", "token", "create", "--json").stdout)
    assert made["token"] and made["token"] in made["joinCommand"] and made["labels"] == {}
    revoked = qbox(harness, "hosts", "token", "revoke", made["id"], tty=True)
    assert (revoked.exit_code, revoked.stdout) == (0, f"revoked {made['id']}\n")
    assert [t["status"] for t in api(harness, "/v1/host-tokens")] == ["revoked"]
    assert join(harness, made["token"]).status_code == 401
    assert qbox(harness, "hosts", "token", "create", "--ttl", "soon").exit_code == ExitCode.USAGE
    assert qbox(harness, "hosts", "token", "create", "--label", "gpu").exit_code == ExitCode.USAGE
    assert qbox(harness, "hosts", "token", "create", "--ttl", "10s").exit_code == ExitCode.VALIDATION
    assert len(api(harness, "/v1/host-tokens")) == 1


def test_remove_asks_first_then_revokes_the_host(harness: Harness) -> None:
    made = json.loads(qbox(harness, "hosts", "token", "create", "--json").stdout)
    joined = join(harness, made["token"]).json()
    hid = joined["hostId"]
    declined = qbox(harness, "hosts", "remove", hid, tty=True)
    assert declined.exit_code == ExitCode.DECLINED
    assert api(harness, f"/v1/hosts/{hid}")["id"] == hid
    removed = qbox(harness, "hosts", "remove", hid, tty=True, stdin_tty=True, input="y\n")
    assert (removed.exit_code, removed.stdout) == (0, f"removed {hid}\n") and "sandboxes end" in removed.stderr
    assert hid not in {h["id"] for h in api(harness, "/v1/hosts")}
    assert heartbeat(harness, joined["credential"]).status_code == 401


def test_watch_redraws_every_two_seconds_until_ctrl_c(harness: Harness) -> None:
    hid = host_id(harness)
    clock = InterruptingClock(polls=2)
    watched = qbox(harness, "hosts", "list", "-w", tty=True, clock=clock)
    assert watched.exit_code == 0 and clock.sleeps == [2.0, 2.0]
    screens = watched.stdout.split(CLEAR_SCREEN)
    assert screens[0] == "" and len(screens) == 4
    assert all(hid in screen and "ready" in screen for screen in screens[1:])
    piped = qbox(harness, "hosts", "list", "--watch", clock=InterruptingClock(polls=1))
    assert piped.exit_code == 0 and CLEAR_SCREEN not in piped.stdout
    assert [[h["id"] for h in json.loads(line)] for line in piped.stdout.splitlines()] == [[hid], [hid]]
