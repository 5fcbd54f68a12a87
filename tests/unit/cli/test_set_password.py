"""``qbox users set-password`` against the real control plane: the first admin's printed
password is replaced, by email or id, piped or typed twice at a terminal; the old one stops
working and the new one logs in to the dashboard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox.cli.exit_codes import ExitCode
from qbox.server.services.bootstrap import ADMIN_EMAIL
from tests.unit.cli.test_hosts import qbox
from tests.unit.server.conftest import Harness, make_harness

NEW_PASSWORD = "correct horse battery staple"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)  # the CLI's side: one database is enough


def first_password(h: Harness) -> str:
    return (h.settings.data_dir / "admin-password").read_text().strip()


def logs_in(h: Harness, password: str, email: str = ADMIN_EMAIL) -> bool:
    answer = h.client.post("/auth/login", data={"email": email, "password": password})
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def admin_id(h: Harness) -> str:
    me = h.client.get("/v1/auth/me", headers=h.auth())
    assert me.status_code == 200, me.text
    return str(me.json()["id"])


def test_by_email_from_stdin_the_old_password_stops_working(harness: Harness) -> None:
    old = first_password(harness)
    assert logs_in(harness, old)

    result = qbox(harness, "users", "set-password", ADMIN_EMAIL, "--password-stdin", input=NEW_PASSWORD + "\n",
                  tty=True)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"password set for {ADMIN_EMAIL} ({admin_id(harness)})\n"
    assert not logs_in(harness, old)
    assert logs_in(harness, NEW_PASSWORD)


def test_by_id_with_json_output(harness: Harness) -> None:
    user_id = admin_id(harness)
    result = qbox(harness, "users", "set-password", user_id, "--password-stdin", "--json", input=NEW_PASSWORD)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"id": user_id, "hasPassword": True}
    assert logs_in(harness, NEW_PASSWORD) and not logs_in(harness, first_password(harness))


def test_an_email_in_another_case_finds_the_user(harness: Harness) -> None:
    result = qbox(harness, "users", "set-password", "Admin@LocalHost", "--password-stdin", input=NEW_PASSWORD)
    assert result.exit_code == 0, result.output
    assert logs_in(harness, NEW_PASSWORD)


def test_at_a_terminal_it_asks_twice_until_both_agree(harness: Harness) -> None:
    typed = f"{NEW_PASSWORD}\nsomething else entirely\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
    result = qbox(harness, "users", "set-password", ADMIN_EMAIL, tty=True, stdin_tty=True, input=typed)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("New password") == 2 and "do not match" in result.stderr
    assert NEW_PASSWORD not in result.output  # hidden input: never echoed
    assert logs_in(harness, NEW_PASSWORD) and not logs_in(harness, first_password(harness))


def test_without_a_terminal_nor_stdin_it_refuses_to_guess(harness: Harness) -> None:
    result = qbox(harness, "users", "set-password", ADMIN_EMAIL, input=NEW_PASSWORD + "\n")
    assert result.exit_code == ExitCode.USAGE and "--password-stdin" in result.stderr
    assert logs_in(harness, first_password(harness))


def test_an_unknown_email_and_a_short_password_change_nothing(harness: Harness) -> None:
    unknown = qbox(harness, "users", "set-password", "nobody@example.com", "--password-stdin",
                   input=NEW_PASSWORD, tty=True)
    assert unknown.exit_code == ExitCode.NOT_FOUND and "no user with email nobody@example.com" in unknown.stderr
    short = qbox(harness, "users", "set-password", ADMIN_EMAIL, "--password-stdin", input="short", tty=True)
    assert short.exit_code == ExitCode.VALIDATION and "at least 12 characters" in short.stderr
    assert logs_in(harness, first_password(harness))
