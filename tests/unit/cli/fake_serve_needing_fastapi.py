"""A serve module whose server extra is missing (the test hides fastapi)."""

from __future__ import annotations

import fastapi  # noqa: F401
import click


@click.command()
def up() -> None:
    click.echo("unreachable")
