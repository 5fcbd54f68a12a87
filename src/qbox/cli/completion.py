"""``qbox completion bash|zsh|fish``: the shell's completion script, from click's own machinery.

Install it with e.g. ``qbox completion bash > ~/.local/share/bash-completion/completions/qbox``
(or ``eval "$(qbox completion zsh)"`` in ``~/.zshrc``); the script calls ``qbox`` back with
``_QBOX_COMPLETE`` set, which click answers with the candidates.
"""

from __future__ import annotations

import os

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "qbox"
COMPLETE_VAR = "_QBOX_COMPLETE"


def script(ctx: click.Context, shell: str) -> str:
    complete_class = get_completion_class(shell)
    if complete_class is None:  # click knows all three; a click without one is a broken install
        raise click.UsageError(f"this click has no completion for {shell}")
    return complete_class(ctx.find_root().command, {}, PROG_NAME, COMPLETE_VAR).source()


def show_for_login_shell(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``qbox --show-completion`` (the published CLI's option): the script for ``$SHELL``."""
    if not value or ctx.resilient_parsing:
        return
    environ = getattr(ctx.obj, "environ", None) or os.environ
    shell = os.path.basename(environ.get("SHELL", ""))
    if shell not in SHELLS:
        raise click.UsageError(f"cannot tell which shell {shell or '$SHELL'} is; use: qbox completion bash|zsh|fish")
    click.echo(script(ctx, shell))
    ctx.exit(0)


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish)."""
    click.echo(script(ctx, shell))
