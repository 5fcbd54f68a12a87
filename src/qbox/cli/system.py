"""``qbox system`` and ``qbox version``: the control plane's version, and this client's beside it."""

from __future__ import annotations

import platform
from dataclasses import replace
from typing import Any

import click

from qbox._version import __version__
from qbox.cli.context import CliState, json_option, pass_state
from qbox.core.errors import QboxError
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


def _server(state: CliState) -> dict[str, Any]:
    """The server's version, or why there is none: this never raises."""
    found: dict[str, Any] = {"baseUrl": None, "serverVersion": None, "serverError": None}
    try:
        config = replace(state.config(), max_retries=0)  # one try: an answer now, not after back-offs
        found["baseUrl"] = config.base_url
        found["serverVersion"] = System.info(config=config).version or None
    except QboxError as error:
        found["serverError"] = error.message
    return found


@click.command("version")
@json_option
@pass_state
def version(state: CliState) -> None:
    """Show this client's version and the server's (an unreachable server is reported, not an error)."""
    server = _server(state)
    try:
        profile: str | None = state.profile_name
        config_path: str | None = str(state.config_file.path)
    except QboxError:  # a config file we may not read: _server has said why
        profile = config_path = None
    data = {"clientVersion": __version__, **server, "pythonVersion": platform.python_version(),
            "configPath": config_path, "profile": profile}
    if state.json:
        state.emit_json(data)
        return
    state.env.out(f"qbox {__version__} (client, Python {data['pythonVersion']})")
    if server["serverVersion"]:
        state.env.out(f"server {server['serverVersion']} at {server['baseUrl']}")
    else:
        where = f" at {server['baseUrl']}" if server["baseUrl"] else ""
        state.env.out(f"server: not reachable{where} ({server['serverError'] or 'no version in its answer'})")
    if profile is not None:
        state.env.out(f"profile {profile} ({config_path})")
