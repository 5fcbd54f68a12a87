"""``qbox auth``: whose API key this is, and whether it works."""

from __future__ import annotations

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.sdk import System

KEY_SHOWN_CHARS = 9  # "qbox_" and four more: enough to tell keys apart


def mask_key(key: str | None) -> str | None:
    if not key:
        return None
    return key[:KEY_SHOWN_CHARS] + "…" if len(key) > KEY_SHOWN_CHARS else key


@click.group("auth")
def auth() -> None:
    """Check the API key."""


@auth.command("me")
@json_option
@pass_state
def me(state: CliState) -> None:
    """Show the key's id, owner and scopes."""
    identity = System.me(config=state.config())
    if state.json:
        state.emit_json(identity.raw)
        return
    state.emit_fields(
        [
            ("API key", identity.api_key_id),
            ("User", identity.id),
            ("Email", identity.email),
            ("Scopes", identity.scopes),
        ]
    )


@auth.command("status")
@json_option
@pass_state
def status(state: CliState) -> None:
    """Say which server and key are in use, and check the key there."""
    config = state.config()
    identity = System.me(config=config)
    if state.json:
        state.emit_json(
            {
                "baseUrl": config.base_url,
                "apiKey": mask_key(config.api_key),
                "authenticated": True,
                **identity.raw,
            }
        )
        return
    who = identity.email or identity.id or identity.api_key_id
    state.env.out(f"Authenticated to {config.base_url} as {who}.")
    state.emit_fields(
        [
            ("API key", mask_key(config.api_key)),
            ("Key id", identity.api_key_id),
            ("Scopes", identity.scopes),
        ]
    )
