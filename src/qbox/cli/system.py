"""``qbox system``: the control plane's version."""

from __future__ import annotations

import click

from qbox._version import __version__
from qbox.cli.context import CliState, json_option, pass_state
from qbox.sdk import System


@click.command("system")
@json_option
@pass_state
def system(state: CliState) -> None:
    """Show the control plane's version (needs no API key)."""
    config = state.config()
    info = System.info(config=config)
    if state.json:
        state.emit_json({**info.raw, "baseUrl": config.base_url, "clientVersion": __version__})
    else:
        state.env.out(info.version)
