"""``qbox sandboxes envs``: a sandbox's environment variables (the published CLI's
``list|set|delete|clear|upload``; ``--secret`` on ``set`` is ours).

Values are masked unless ``--reveal``: a secret (set with ``--secret``, or a
name like ``*_TOKEN``) shows as ``********``. Changes reach what starts
afterwards in the sandbox: commands, shells and code contexts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TextIO

import click

from qbox.cli.context import CliState, confirm_or_decline, json_option, pass_state
from qbox.cli.sandbox_ref import parse_pairs, resolve_sandbox
from qbox.sdk import EnvVar, Envs
from qbox.sdk._transport import Connection

ENV_COLUMNS = ("KEY", "VALUE", "SOURCE")


@contextlib.contextmanager
def _envs(state: CliState, sandbox: str) -> Iterator[Envs]:
    """The sandbox's envs over one connection; a sandbox that ended can still be listed."""
    sandbox_id = resolve_sandbox(state, sandbox)
    with Connection.open(state.config()) as connection:
        yield Envs(connection, sandbox_id)


def _wire(env: EnvVar) -> dict[str, object]:
    return {"key": env.key, "value": env.value, "source": env.source, "secret": env.secret}


@click.group("envs")
def envs() -> None:
    """List and change a sandbox's environment variables."""


@envs.command("list")
@click.argument("sandbox")
@click.option("--reveal", is_flag=True, help="Show secret values (masked by default).")
@json_option
@pass_state
def list_(state: CliState, sandbox: str, reveal: bool) -> None:
    """List the envs of SANDBOX (an id or a name): the template's, its own and the platform's."""
    with _envs(state, sandbox) as sandbox_envs:
        found = sandbox_envs.list(mask=not reveal)
    state.emit([_wire(env) for env in found], ENV_COLUMNS,
               [[env.key, env.value, env.source] for env in found])


@envs.command("set")
@click.argument("sandbox")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--replace", is_flag=True, help="Replace all of the sandbox's own envs with these.")
@click.option("--secret", is_flag=True, help="Mark these envs secret (masked in listings).")
@pass_state
def set_(state: CliState, sandbox: str, pairs: tuple[str, ...], replace: bool, secret: bool) -> None:
    """Set envs of SANDBOX, leaving the others alone (unless --replace)."""
    values = parse_pairs(pairs, "KEY=VALUE")
    with _envs(state, sandbox) as sandbox_envs:
        if replace:
            sandbox_envs.set_all(values, secret=secret)
        else:
            sandbox_envs.set(values, secret=secret)
    state.info(f"{'replaced with' if replace else 'set'} {', '.join(values)}")


@envs.command("delete")
@click.argument("sandbox")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@pass_state
def delete(state: CliState, sandbox: str, keys: tuple[str, ...]) -> None:
    """Remove envs of SANDBOX by key (a template's value of the same key shows again)."""
    with _envs(state, sandbox) as sandbox_envs:
        sandbox_envs.delete(*keys)


@envs.command("clear")
@click.argument("sandbox")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def clear(state: CliState, sandbox: str, yes: bool) -> None:
    """Remove all of SANDBOX's own envs (the template's and the platform's stay)."""
    confirm_or_decline(state, f"Clear all envs of {sandbox}?", yes=yes, consequence="nothing cleared")
    with _envs(state, sandbox) as sandbox_envs:
        sandbox_envs.clear()


@envs.command("upload")
@click.argument("sandbox")
@click.argument("file", type=click.File("r", encoding="utf-8"), metavar="FILE|-")
@json_option
@pass_state
def upload(state: CliState, sandbox: str, file: TextIO) -> None:
    """Set the envs of a .env FILE (- reads stdin); lines it cannot read are listed, the rest apply."""
    text = file.read()
    with _envs(state, sandbox) as sandbox_envs:
        # Ending in a newline, the text is never taken for a path (upload_dotenv's guess).
        result = sandbox_envs.upload_dotenv(text if text.endswith("\n") else text + "\n") \
            if text else None
    applied, skipped = (result.applied, result.skipped) if result else ([], 0)
    rejected = result.rejected if result else []
    if state.json:
        state.emit_json({"applied": applied, "skipped": skipped,
                         "rejected": [{"line": r.line, "reason": r.reason,
                                       **({"key": r.key} if r.key else {})} for r in rejected]})
        return
    state.env.out(f"applied {len(applied)}, skipped {skipped}, rejected {len(rejected)}")
    for r in rejected:
        state.env.out(f"  line {r.line}: {r.reason}" + (f" ({r.key})" if r.key else ""))
