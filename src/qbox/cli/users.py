"""``qbox users`` (admin): add, list, inspect and disable users; set their passwords."""

from __future__ import annotations

import sys
from typing import Any

import click

from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.sdk import UserInfo, Users

USER_COLUMNS = ("ID", "EMAIL", "ROLE", "STATUS", "PASSWORD", "CREATED")


def _row(user: UserInfo) -> list[Any]:
    return [user.id, user.email, user.role, user.status, user.has_password, user.created_at]


def _show(state: CliState, user: UserInfo) -> None:
    if state.json:
        state.emit_json(user.raw)
        return
    state.emit_fields([
        ("ID", user.id), ("Email", user.email), ("Role", user.role), ("Status", user.status),
        ("Password", user.has_password), ("Created", user.created_at), ("Disabled", user.disabled_at),
    ])  # fmt: skip


def read_password() -> str:
    """The password piped on stdin, without the newline ``echo`` adds; kept out of argv and shell history."""
    password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        raise click.BadParameter("no password on stdin", param_hint="--password-stdin")
    return password


@click.group("users")
def users() -> None:
    """Add, list and disable users (admin)."""


@users.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["member", "admin"]), default="member", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the user's password from stdin.")
@json_option
@pass_state
def add(state: CliState, email: str, role: str, password_stdin: bool) -> None:
    """Add a user; print its id. Without a password they cannot log in to the dashboard yet."""
    password = read_password() if password_stdin else None
    user = Users.create(email, role, password, config=state.config())
    if state.explicit_format is None:
        state.env.out(user.id)
    else:
        _show(state, user)


@users.command("list")
@json_option
@pass_state
def list_(state: CliState) -> None:
    """List users."""
    found = Users.list(config=state.config())
    if state.json:
        state.emit_json([u.raw for u in found])
    else:
        state.emit_table(USER_COLUMNS, [_row(u) for u in found])


@users.command("get")
@click.argument("user_id", metavar="ID")
@json_option
@pass_state
def get(state: CliState, user_id: str) -> None:
    """Show one user."""
    _show(state, Users.get(user_id, config=state.config()))


@users.command("disable")
@click.argument("user_id", metavar="ID")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def disable(state: CliState, user_id: str, yes: bool) -> None:
    """Disable a user and revoke their API keys and sessions (asks first unless -y)."""
    confirm_or_decline(state, f"Disable user {user_id}? Their API keys and sessions are revoked too.",
                       yes=yes, consequence="nothing disabled")  # fmt: skip
    user = Users.disable(user_id, config=state.config())
    if state.json:
        state.emit_json(user.raw)
    else:
        state.env.out(f"disabled {user.id} ({user.email})")


@users.command("set-password")
@click.argument("user_id", metavar="ID")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin (required).")
@json_option
@pass_state
def set_password(state: CliState, user_id: str, password_stdin: bool) -> None:
    """Set a user's dashboard password, read from stdin."""
    if not password_stdin:
        raise click.UsageError("pass the password on stdin with --password-stdin (never as an argument)")
    Users.set_password(user_id, read_password(), config=state.config())
    if state.json:
        state.emit_json({"id": user_id, "hasPassword": True})
    else:
        state.env.out(f"password set for {user_id}")
