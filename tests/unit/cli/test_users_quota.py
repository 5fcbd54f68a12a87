"""``qbox users quota | set-quota | quota-defaults`` against a scripted API."""

from __future__ import annotations

import json

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply
from tests.unit.sdk.test_quotas import quota

USER_QUOTA = "/v1/users/usr_2/quota"
DEFAULTS = "/v1/quota-defaults"


def test_set_quota_sends_numbers_and_resets(cli: Cli) -> None:
    cli.server.on("PUT", USER_QUOTA, reply(200, quota(overrides={"sandboxes": 5, "memoryMb": 4096})))
    result = cli("users", "set-quota", "usr_2", "--sandboxes", "5", "--memory-mb", "4096", "--shells", "default",
                 tty=True)
    assert result.exit_code == 0, result.output
    assert cli.server.last("PUT", USER_QUOTA).body == {"sandboxes": 5, "memoryMb": 4096, "shells": None}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["QUOTA", "LIMIT", "USED", "OVERRIDE"]
    assert lines[1].split() == ["sandboxes", "10", "0", "5"] and lines[3].split() == ["memory-mb", "32768", "0", "4096"]


def test_set_quota_needs_a_quota_and_refuses_bad_numbers(cli: Cli) -> None:
    assert cli("users", "set-quota", "usr_2").exit_code == ExitCode.USAGE
    assert cli("users", "set-quota", "usr_2", "--vcpus", "-1").exit_code == ExitCode.USAGE
    assert cli("users", "set-quota", "usr_2", "--vcpus", "lots").exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_quota_shows_a_user_or_yourself(cli: Cli) -> None:
    cli.server.on("GET", USER_QUOTA, reply(200, quota()))
    cli.server.on("GET", "/v1/quota", reply(200, quota(exempt=True, limits={})))
    assert json.loads(cli("users", "quota", "usr_2", "--json").stdout)["userId"] == "usr_2"
    mine = cli("users", "quota", tty=True)
    assert mine.exit_code == 0 and "exempt" in mine.stdout and "unlimited" in mine.stdout


def test_quota_defaults_show_and_change(cli: Cli) -> None:
    limits = quota()["limits"]
    cli.server.on("GET", DEFAULTS, reply(200, {"limits": limits, "stored": {}}))
    cli.server.on("PUT", DEFAULTS, reply(200, {"limits": {**limits, "vcpus": 8}, "stored": {"vcpus": 8}}))
    shown = cli("users", "quota-defaults", tty=True)
    assert shown.exit_code == 0 and "setting" in shown.stdout and "admin" not in shown.stdout
    changed = cli("users", "quota-defaults", "--vcpus", "8", "--commands", "default", tty=True)
    assert changed.exit_code == 0
    assert cli.server.last("PUT", DEFAULTS).body == {"vcpus": 8, "commands": None}
    rows = [line.split() for line in changed.stdout.splitlines() if line.startswith("vcpus")]
    assert rows == [["vcpus", "8", "admin"]]


def test_a_member_setting_a_quota_exits_3(cli: Cli) -> None:
    cli.server.on("PUT", USER_QUOTA, error(403, "forbidden", "this needs an admin"))
    result = cli("users", "set-quota", "usr_2", "--sandboxes", "1", tty=True)
    assert result.exit_code == ExitCode.AUTH and "this needs an admin" in result.stderr
