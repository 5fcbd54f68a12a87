"""``qbox``: the command-line client (and, with the ``server`` extra, ``up``/``server``/``agent``)."""

from __future__ import annotations

import click

from qbox._version import __version__
from qbox.cli import api_keys, audit, auth, ca, hosts, sandboxes, system, templates, users
from qbox.cli.context import CliState
from qbox.cli.environment import Environment
from qbox.cli.group import QboxGroup

LAZY_COMMANDS = {
    "up": ("qbox.cli.serve:up", "Run a control plane and an agent on this machine."),
    "server": ("qbox.cli.serve:server", "Run the control plane."),
    "agent": ("qbox.cli.serve:agent", "Run a host agent."),
}


@click.group(
    cls=QboxGroup,
    lazy_commands=LAZY_COMMANDS,
    aliases={"sb": "sandboxes"},
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--api-key", metavar="KEY", help="API key (default: $QBOX_API_KEY).")
@click.option("--base-url", metavar="URL", help="Control plane URL (default: $QBOX_BASE_URL or local).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    help="Output format (default: table on a terminal, json otherwise).",
)
@click.option("--request-timeout", type=float, metavar="SECONDS", help="Per-request timeout.")
@click.version_option(__version__, "-V", "--version", prog_name="qbox")
@click.pass_context
def main(
    ctx: click.Context,
    api_key: str | None,
    base_url: str | None,
    output: str | None,
    request_timeout: float | None,
) -> None:
    """qbox: self-hosted sandboxes.

    Sandbox ids start with sb_; any other SANDBOX argument is looked up by
    its name label (set with `qbox sandboxes create --name`).
    """
    env = ctx.obj if isinstance(ctx.obj, Environment) else Environment()
    ctx.obj = CliState(env, api_key=api_key, base_url=base_url, request_timeout=request_timeout, output=output)


main.add_command(sandboxes.sandboxes)
main.add_command(system.system)
main.add_command(auth.auth)
main.add_command(templates.templates)
main.add_command(api_keys.api_keys)
main.add_command(users.users)
main.add_command(audit.audit)
main.add_command(hosts.hosts)
main.add_command(ca.ca)
