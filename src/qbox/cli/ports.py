"""``qbox sandboxes ports``: expose a sandbox's ports at preview URLs (the published CLI's
``list|expose|update|unexpose``, plus ``signed-url`` and ``probe``); and ``-p PORT[:visibility]``
of ``sandboxes create``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.cli.sandbox_ref import resolve_sandbox
from qbox.sdk import Port, Ports, PortSpec
from qbox.sdk._transport import Connection

PORT_COLUMNS = ("PORT", "VISIBILITY", "HOST HEADER", "URL")
VISIBILITIES = ("public", "private", "signed_url")
HOST_HEADER_MODES = ("rewrite", "preserve")
PRIVILEGED_BELOW = 1024

port_number = click.IntRange(1, 65535)


def spawn_ports(values: Sequence[str]) -> list[PortSpec]:
    """``-p PORT[:visibility]`` of ``sandboxes create``: public unless said; a port under 1024
    is forced, as the published CLI does."""
    specs: list[PortSpec] = []
    for value in values:
        number, _, visibility = value.partition(":")
        visibility = visibility or "public"
        if not number.isdigit() or not 1 <= int(number) <= 65535:
            raise click.BadParameter(f"expected PORT[:visibility] with PORT in 1..65535, got {value!r}",
                                     param_hint="--port")
        if visibility not in VISIBILITIES:
            raise click.BadParameter(f"visibility is one of {', '.join(VISIBILITIES)}, got {visibility!r}",
                                     param_hint="--port")
        specs.append(PortSpec(int(number), visibility, force=int(number) < PRIVILEGED_BELOW))
    return specs


@contextlib.contextmanager
def _ports(state: CliState, sandbox: str) -> Iterator[Ports]:
    """The sandbox's ports over one connection; the sandbox need not be running (its ports can
    still be listed and removed)."""
    sandbox_id = resolve_sandbox(state, sandbox)
    with Connection.open(state.config()) as connection:
        yield Ports(connection, sandbox_id)


def _fields(port: Port) -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = [("Port", port.port), ("Visibility", port.visibility),
                                       ("Host header", port.host_header_mode), ("URL", port.url)]
    if port.allowed_users is not None:
        pairs.append(("Allowed users", ", ".join(port.allowed_users) or "only the owner"))
    if port.visibility == "signed_url":
        pairs.append(("Signed URL", port.signed_url or "expired: mint one with 'ports signed-url'"))
        pairs.append(("Expires (epoch s)", port.signed_url_expires_at))
    return pairs


def _show_url(state: CliState, port: Port) -> None:
    """The URL alone (scriptable, as the published CLI prints it), or the Port under -o/--json."""
    if state.explicit_format is None:
        state.env.out(port.signed_url or port.url)
    else:
        state.emit_json(port.raw)


@click.group("ports")
def ports() -> None:
    """Expose a sandbox's ports at preview URLs."""


@ports.command("list")
@click.argument("sandbox")
@json_option
@pass_state
def list_(state: CliState, sandbox: str) -> None:
    """List the exposed ports of SANDBOX (an id or a name)."""
    with _ports(state, sandbox) as found:
        rows = found.list()
    state.emit([p.raw for p in rows], PORT_COLUMNS,
               [[p.port, p.visibility, p.host_header_mode, p.signed_url or p.url] for p in rows])


@ports.command("expose")
@click.argument("sandbox")
@click.argument("port", type=port_number)
@click.option("--visibility", type=click.Choice(VISIBILITIES), default="public", show_default=True,
              help="Who may open the URL: anyone, the owner (and --allowed-user), or holders of a signed link.")
@click.option("--ttl", type=int, help="Lifetime of the signed link in seconds (signed_url only).")
@click.option("--force", is_flag=True, help="Allow a port under 1024.")
@click.option("--allowed-user", "allowed_users", multiple=True, metavar="USER",
              help="A user id or email who may open a private port too; repeatable.")
@click.option("--host-header-mode", type=click.Choice(HOST_HEADER_MODES), default="rewrite", show_default=True,
              help="rewrite: the app sees Host localhost:PORT; preserve: the preview host.")
@json_option
@pass_state
def expose(state: CliState, sandbox: str, port: int, visibility: str, ttl: int | None, force: bool,
           allowed_users: tuple[str, ...], host_header_mode: str) -> None:
    """Expose PORT of SANDBOX; print its URL (a signed link for signed_url)."""
    with _ports(state, sandbox) as found:
        found.expose(port, visibility=visibility, allowed_users=list(allowed_users) or None,
                     host_header_mode=host_header_mode, ttl=ttl, force=force)
        _show_url(state, found.get(port))


@ports.command("update")
@click.argument("sandbox")
@click.argument("port", type=port_number)
@click.option("--visibility", type=click.Choice(VISIBILITIES), help="The new visibility.")
@click.option("--allowed-user", "allowed_users", multiple=True, metavar="USER",
              help="Replace the users besides the owner who may open a private port; repeatable.")
@click.option("--host-header-mode", type=click.Choice(HOST_HEADER_MODES), help="rewrite or preserve.")
@json_option
@pass_state
def update(state: CliState, sandbox: str, port: int, visibility: str | None, allowed_users: tuple[str, ...],
           host_header_mode: str | None) -> None:
    """Change PORT's visibility, allowed users or Host header mode; the rest stays."""
    with _ports(state, sandbox) as found:
        changed = found.update(port, visibility=visibility, allowed_users=list(allowed_users) or None,
                               host_header_mode=host_header_mode)
    state.emit_item(changed.raw, _fields(changed))


@ports.command("unexpose")
@click.argument("sandbox")
@click.argument("port", type=port_number)
@json_option
@pass_state
def unexpose(state: CliState, sandbox: str, port: int) -> None:
    """Stop exposing PORT: its URLs stop working."""
    with _ports(state, sandbox) as found:
        found.unexpose(port)
    if state.explicit_format is None:
        state.info(f"port {port} is no longer exposed")
    else:
        state.emit_json({"port": port, "exposed": False})


@ports.command("signed-url")
@click.argument("sandbox")
@click.argument("port", type=port_number)
@click.option("--ttl", type=int, help="Lifetime in seconds (default: the port's last, else the server's).")
@json_option
@pass_state
def signed_url(state: CliState, sandbox: str, port: int, ttl: int | None) -> None:
    """Mint a new signed link for a signed_url PORT; every older link stops working."""
    with _ports(state, sandbox) as found:
        found.mint_signed_url(port, ttl=ttl)
        _show_url(state, found.get(port))


@ports.command("probe")
@click.argument("sandbox")
@click.argument("port", type=port_number)
@json_option
@pass_state
def probe(state: CliState, sandbox: str, port: int) -> None:
    """Whether something listens on the exposed PORT inside SANDBOX."""
    with _ports(state, sandbox) as found:
        reachable = found.probe(port)
    if state.explicit_format is None:
        state.env.out("reachable" if reachable else "not reachable")
    else:
        state.emit_json({"port": port, "reachable": reachable})
