"""``qbox users`` (admin): add, list, inspect and disable users; set their passwords and quotas."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import click

from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.core.errors import NotFoundError
from qbox.sdk import QuotaDefaults, QuotaInfo, UserInfo, Users

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
@click.argument("user", metavar="ID|EMAIL")
@click.option("--password-stdin", is_flag=True,
              help="Read the new password from stdin (without it, asked twice on a terminal).")
@json_option
@pass_state
def set_password(state: CliState, user: str, password_stdin: bool) -> None:
    """Set a user's dashboard password (e.g. admin@localhost's, printed at first start).

    Never taken as an argument: piped with --password-stdin, or typed at the prompt.
    """
    if password_stdin:
        password = read_password()
    elif state.env.stdin_is_tty():
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        raise click.UsageError("pass the password on stdin with --password-stdin (never as an argument)")
    user_id = _user_id(state, user)
    Users.set_password(user_id, password, config=state.config())
    if state.json:
        state.emit_json({"id": user_id, "hasPassword": True})
    else:
        state.env.out(f"password set for {user}" if user == user_id else f"password set for {user} ({user_id})")


def _user_id(state: CliState, user: str) -> str:
    """A user's id, given it or their email (looked up in the users list)."""
    if "@" not in user:
        return user
    wanted = user.strip().lower()
    for found in Users.list(config=state.config()):
        if found.email.lower() == wanted:
            return found.id
    raise NotFoundError(f"no user with email {user}", details={"email": user})


# --- quotas --------------------------------------------------------------------

QUOTA_COLUMNS = ("QUOTA", "LIMIT", "USED", "OVERRIDE")
# Option / row name -> QuotaValues field.
QUOTA_OPTIONS = {"sandboxes": "sandboxes", "vcpus": "vcpus", "memory-mb": "memory_mb",
                 "disk-mb": "disk_mb", "commands": "commands", "shells": "shells"}


class LimitType(click.ParamType[int | str]):
    """A quota given on the command line: a whole number, or ``default`` to drop the override."""

    name = "N|default"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if value == "default":
            return "default"
        if isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'default'", param, ctx)
        if number < 0:
            self.fail("must be 0 or more", param, ctx)
        return number


def quota_options(func: Any) -> Any:
    for option, field in reversed(QUOTA_OPTIONS.items()):
        func = click.option(f"--{option}", field, type=LimitType(), default=None,
                            help=f"{option.replace('-', ' ')}: a number, or 'default'")(func)
    return func


Limit = int | str | None


@dataclass(frozen=True)
class QuotaChange:
    """The quota options given: numbers to set, and the names to reset ('default')."""

    limits: dict[str, int]
    reset: list[str]

    @classmethod
    def of(cls, **given: Limit) -> QuotaChange:
        return cls({name: value for name, value in given.items() if isinstance(value, int)},
                   [name for name, value in given.items() if value == "default"])

    @property
    def empty(self) -> bool:
        return not self.limits and not self.reset

    def require(self) -> QuotaChange:
        if self.empty:
            raise click.UsageError("give at least one quota, e.g. --sandboxes 5 (or --sandboxes default)")
        return self

    def value(self, name: str) -> int | None:
        return self.limits.get(name)


def _limit(value: int | None) -> Any:
    return "unlimited" if value is None else value


def _show_quota(state: CliState, info: QuotaInfo) -> None:
    if state.json:
        state.emit_json(info.raw)
        return
    rows = [[option, _limit(getattr(info.limits, field)), getattr(info.usage, field),
             "-" if getattr(info.overrides, field) is None else getattr(info.overrides, field)]
            for option, field in QUOTA_OPTIONS.items()]
    if info.exempt:
        state.env.out(f"{info.user_id} is an admin: exempt from quotas")
    state.emit_table(QUOTA_COLUMNS, rows)


def _show_defaults(state: CliState, defaults: QuotaDefaults) -> None:
    if state.json:
        state.emit_json(defaults.raw)
        return
    state.emit_table(("QUOTA", "DEFAULT", "SOURCE"), [
        [option, getattr(defaults.limits, field),
         "setting" if getattr(defaults.stored, field) is None else "admin"]
        for option, field in QUOTA_OPTIONS.items()])


@users.command("quota")
@click.argument("user_id", metavar="[ID]", required=False)
@json_option
@pass_state
def quota(state: CliState, user_id: str | None) -> None:
    """Show a user's quotas and usage (your own without ID)."""
    _show_quota(state, Users.quota(user_id, config=state.config()))


@users.command("set-quota")
@click.argument("user_id", metavar="ID")
@quota_options
@json_option
@pass_state
def set_quota(state: CliState, user_id: str, sandboxes: Limit, vcpus: Limit, memory_mb: Limit, disk_mb: Limit,
              commands: Limit, shells: Limit) -> None:
    """Override a user's quotas; 'default' returns one to the default (admin)."""
    change = QuotaChange.of(sandboxes=sandboxes, vcpus=vcpus, memory_mb=memory_mb, disk_mb=disk_mb,
                            commands=commands, shells=shells).require()
    _show_quota(state, Users.set_quota(
        user_id, sandboxes=change.value("sandboxes"), vcpus=change.value("vcpus"),
        memory_mb=change.value("memory_mb"), disk_mb=change.value("disk_mb"),
        commands=change.value("commands"), shells=change.value("shells"), reset=change.reset,
        config=state.config()))


@users.command("quota-defaults")
@quota_options
@json_option
@pass_state
def quota_defaults(state: CliState, sandboxes: Limit, vcpus: Limit, memory_mb: Limit, disk_mb: Limit,
                   commands: Limit, shells: Limit) -> None:
    """Show the quota defaults, or change them with options; 'default' returns one to its setting (admin)."""
    change = QuotaChange.of(sandboxes=sandboxes, vcpus=vcpus, memory_mb=memory_mb, disk_mb=disk_mb,
                            commands=commands, shells=shells)
    if change.empty:
        _show_defaults(state, Users.quota_defaults(config=state.config()))
        return
    _show_defaults(state, Users.set_quota_defaults(
        sandboxes=change.value("sandboxes"), vcpus=change.value("vcpus"),
        memory_mb=change.value("memory_mb"), disk_mb=change.value("disk_mb"),
        commands=change.value("commands"), shells=change.value("shells"), reset=change.reset,
        config=state.config()))
