"""``qbox hosts`` (admin): list (and watch) hosts, inspect, drain, uncordon and remove them; make the
tokens new hosts join with."""

from __future__ import annotations

from typing import Any

import click

from qbox.cli import output
from qbox.cli.audit import RELATIVE_TIME, UNIT_SECONDS
from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.cli.watch import watch as _watch
from qbox.cli.watch import watch_options
from qbox.sdk import CreatedHostToken, Host, Hosts, HostToken, HostTokens

HOST_COLUMNS = ("ID", "HOSTNAME", "STATUS", "SANDBOXES", "VCPUS", "MEMORY (MiB)", "CPU %", "DISK (MiB)",
                "LAST HEARTBEAT")
TOKEN_COLUMNS = ("ID", "STATUS", "LABELS", "CREATED", "EXPIRES", "USED", "HOST")
STATUSES = ("ready", "draining", "unhealthy", "down")
WATCH_SECONDS = 2.0
NOT_SHOWN_AGAIN = "Save this token now: it is not shown again."


def _of(used: Any, total: Any) -> str:
    """``used/total``, with ``-`` for a figure the host never reported."""
    return f"{'-' if used is None else used}/{'-' if total is None else total}"


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f}"


def _row(host: Host) -> list[Any]:
    sandboxes = host.sandbox_count if host.max_sandboxes is None else _of(host.sandbox_count, host.max_sandboxes)
    return [host.id, host.hostname, host.status, sandboxes, _of(host.used_vcpus, host.total_vcpus),
            _of(host.used_memory_mb, host.total_memory_mb), _percent(host.cpu_percent),
            _of(host.disk_used_mb, host.disk_total_mb), host.last_heartbeat_at]  # fmt: skip


def _show(state: CliState, host: Host) -> None:
    if state.json:
        state.emit_json(host.raw)
        return
    state.emit_fields([
        ("ID", host.id), ("Hostname", host.hostname), ("Status", host.status), ("Kind", host.kind),
        ("Address", host.address), ("Version", host.version), ("Sandboxes", host.sandbox_count),
        ("Max sandboxes", host.max_sandboxes), ("vCPUs (reserved)", _of(host.used_vcpus, host.total_vcpus)),
        ("Memory MiB (reserved)", _of(host.used_memory_mb, host.total_memory_mb)),
        ("Disk MiB (reserved)", host.used_disk_mb), ("CPU % (measured)", _percent(host.cpu_percent)),
        ("Memory MiB (measured)", host.memory_used_mb), ("Disk MiB (measured)", _of(host.disk_used_mb,
                                                                                     host.disk_total_mb)),
        ("Runtimes", list(host.runtimes)), ("Templates", list(host.templates)), ("Labels", host.labels),
        ("Last heartbeat", host.last_heartbeat_at), ("Created", host.created_at),
    ])  # fmt: skip


def _print_hosts(state: CliState, hosts: list[Host]) -> None:
    if state.json:
        state.emit_json([h.raw for h in hosts])
    else:
        state.emit_table(HOST_COLUMNS, [_row(h) for h in hosts])


class Duration(click.ParamType[int]):
    """A lifetime: seconds (``600``) or a number and a unit (``90s``, ``30m``, ``1h``, ``2d``, ``1w``)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        match = RELATIVE_TIME.fullmatch(text)
        if match is None:
            self.fail(f"expected seconds or a duration such as 30m, 1h, 2d; got {value!r}", param, ctx)
        return int(match[1]) * UNIT_SECONDS[match[2]]


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--label")
        labels[key] = val
    return labels


def _token_row(token: HostToken) -> list[Any]:
    return [token.id, token.status, token.labels, token.created_at, token.expires_at, token.used_at,
            token.host_id]


@click.group("hosts")
def hosts() -> None:
    """List, drain, uncordon and remove hosts; make join tokens for new ones (admin)."""


@hosts.command("list")
@watch_options(WATCH_SECONDS)
@click.option("--status", type=click.Choice(STATUSES), help="Only hosts in this status.")
@json_option
@pass_state
def list_(state: CliState, watch: bool, watch_interval: float, status: str | None) -> None:
    """List hosts: sandboxes, reserved vCPUs and memory, measured CPU and disk."""
    if watch:
        config = state.config()
        _watch(state, lambda: Hosts.list(status, config=config), lambda h: h.raw, HOST_COLUMNS, _row,
               noun="host(s)", interval=watch_interval)
        return
    _print_hosts(state, Hosts.list(status, config=state.config()))


@hosts.command("get")
@click.argument("host_id", metavar="ID")
@json_option
@pass_state
def get(state: CliState, host_id: str) -> None:
    """Show one host."""
    _show(state, Hosts.get(host_id, config=state.config()))


def _changed(state: CliState, host: Host) -> None:
    if state.json:
        state.emit_json(host.raw)
    else:
        state.env.out(f"{host.id} is {host.status}")


@hosts.command("drain")
@click.argument("host_id", metavar="ID")
@json_option
@pass_state
def drain(state: CliState, host_id: str) -> None:
    """Send no new sandboxes to a host; those running there run to their end."""
    _changed(state, Hosts.drain(host_id, config=state.config()))


# The published CLI's name for it (it drains, too: WIRE_PROTOCOL.md §9.15).
hosts.add_command(drain, "cordon")


@hosts.command("uncordon")
@click.argument("host_id", metavar="ID")
@json_option
@pass_state
def uncordon(state: CliState, host_id: str) -> None:
    """Let a drained host take new sandboxes again."""
    _changed(state, Hosts.uncordon(host_id, config=state.config()))


@hosts.command("remove")
@click.argument("host_id", metavar="ID")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def remove(state: CliState, host_id: str, yes: bool) -> None:
    """Revoke a host's credential; its running sandboxes end (asks first unless -y)."""
    confirm_or_decline(state, f"Remove host {host_id}? Its sandboxes end and its agent must join again.",
                       yes=yes, consequence="nothing removed")  # fmt: skip
    Hosts.remove(host_id, config=state.config())
    if state.json:
        state.emit_json({"id": host_id, "removed": True})
    else:
        state.env.out(f"removed {host_id}")


@hosts.group("token")
def token() -> None:
    """Join tokens: what `qbox agent --join` exchanges, once, for a host's own credential."""


def _deliver(state: CliState, created: CreatedHostToken) -> None:
    """The token once on stdout (alone, so ``$(…)`` captures it); the join command with it on stderr."""
    state.env.err(f"Created join token {created.id}, valid until {output.cell(created.expires_at)}. {NOT_SHOWN_AGAIN}")
    if state.json:
        state.emit_json(created.raw)
        return
    if created.join_command:
        state.env.err(f"On the new host, run:\n  {created.join_command}")
    state.env.out(created.token)


@token.command("create")
@click.option("--ttl", type=Duration(), metavar="DURATION",
              help="How long it may be used: 10m, 1h (the server's default), 7d at most.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="A label of the host that joins (repeatable).")
@json_option
@pass_state
def token_create(state: CliState, ttl: int | None, labels: tuple[str, ...]) -> None:
    """Make a one-time join token; it is printed once."""
    _deliver(state, HostTokens.create(ttl, _labels(labels) or None, config=state.config()))


@token.command("list")
@json_option
@pass_state
def token_list(state: CliState) -> None:
    """List join tokens (never the tokens themselves)."""
    found = HostTokens.list(config=state.config())
    if state.json:
        state.emit_json([t.raw for t in found])
    else:
        state.emit_table(TOKEN_COLUMNS, [_token_row(t) for t in found])


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@json_option
@pass_state
def token_revoke(state: CliState, token_id: str) -> None:
    """Revoke a join token that has not been used; hosts that joined with it stay."""
    HostTokens.revoke(token_id, config=state.config())
    if state.json:
        state.emit_json({"id": token_id, "revoked": True})
    else:
        state.env.out(f"revoked {token_id}")
