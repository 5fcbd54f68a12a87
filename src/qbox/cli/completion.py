"""``qbox completion bash|zsh|fish``: the shell's completion script, from click's own machinery.

Install it with e.g. ``qbox completion bash > ~/.local/share/bash-completion/completions/qbox``
(or ``eval "$(qbox completion zsh)"`` in ``~/.zshrc``); the script calls ``qbox`` back with
``_QBOX_COMPLETE`` set, which click answers with the candidates.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "qbox"
COMPLETE_VAR = "_QBOX_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish)."""
    complete_class = get_completion_class(shell)
    if complete_class is None:  # click knows all three; a click without one is a broken install
        raise click.UsageError(f"this click has no completion for {shell}")
    root = ctx.find_root().command
    click.echo(complete_class(root, {}, PROG_NAME, COMPLETE_VAR).source())
