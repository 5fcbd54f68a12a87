"""Stands in for ``qbox.cli.serve`` (written elsewhere) in the lazy-command tests."""

from __future__ import annotations

import click


@click.command()
@click.option("--port", type=int, default=8080)
def up(port: int) -> None:
    click.echo(f"fake up on {port}")


@click.command()
def server() -> None:
    click.echo("fake server")


@click.command()
def agent() -> None:
    click.echo("fake agent")
