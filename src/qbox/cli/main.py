"""``qbox``: the command-line client (and, with the ``server`` extra, ``up``/``server``/``agent``)."""

from __future__ import annotations

import click

from qbox._version import __version__
from qbox.cli import (
    api_keys,
    audit,
    auth,
    ca,
    completion,
    config,
    doctor,
    hosts,
    sandboxes,
    system,
    templates,
    users,
)
from qbox.cli.context import CliState
from qbox.cli.environment import Environment
from qbox.cli.group import QboxGroup
from qbox.cli.output import FORMATS
from qbox.cli.verbose import log_requests

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
@click.option("-p", "--profile", metavar="NAME", help="Config profile (default: $QBOX_PROFILE or the active one).")
@click.option("--api-key", metavar="KEY", help="API key (default: $QBOX_API_KEY, then the profile's).")
@click.option("--base-url", metavar="URL", help="Control plane URL (default: $QBOX_BASE_URL, the profile's, local).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    help="Output format (default: table on a terminal, json otherwise; prose is table's key/value lines).",
)
@click.option("--request-timeout", type=float, metavar="SECONDS", help="Per-request timeout.")
@click.option("--no-tls-verify", is_flag=True, help="Do not verify the server's TLS certificate (HTTP requests).")
@click.option("-y", "--yes", is_flag=True, help="Answer yes to every confirmation.")
@click.option("-q", "--quiet", is_flag=True, help="No informational lines on stderr.")
@click.option("-v", "--verbose", count=True, help="Log each HTTP request on stderr.")
@click.option("--no-color", is_flag=True, help="No colours (qbox prints none; accepted for scripts).")
@click.option("--show-completion", is_flag=True, expose_value=False, is_eager=True,
              callback=completion.show_for_login_shell, help="Print the completion script for $SHELL.")
@click.version_option(__version__, "-V", "--version", prog_name="qbox")
@click.pass_context
def main(
    ctx: click.Context,
    profile: str | None,
    api_key: str | None,
    base_url: str | None,
    output: str | None,
    request_timeout: float | None,
    no_tls_verify: bool,
    yes: bool,
    quiet: bool,
    verbose: int,
    no_color: bool,
) -> None:
    """qbox: self-hosted sandboxes.

    Sandbox ids start with sb_; any other SANDBOX argument is looked up by
    its name label (set with `qbox sandboxes create --name`).
    """
    env = ctx.obj if isinstance(ctx.obj, Environment) else Environment()
    ctx.obj = CliState(env, api_key=api_key, base_url=base_url, request_timeout=request_timeout, output=output,
                       profile=profile, assume_yes=yes, verify_tls=not no_tls_verify, quiet=quiet)
    if verbose:
        ctx.with_resource(log_requests(env))


main.add_command(sandboxes.sandboxes)
main.add_command(system.system)
main.add_command(auth.auth)
main.add_command(templates.templates)
main.add_command(api_keys.api_keys)
main.add_command(users.users)
main.add_command(audit.audit)
main.add_command(hosts.hosts)
main.add_command(ca.ca)
main.add_command(config.config)
main.add_command(system.version)
main.add_command(doctor.doctor)
main.add_command(completion.completion)
