"""What every sandbox command shares: a SANDBOX argument (id or name) and ``K=V`` options.

A leaf of the CLI: the command modules import it, it imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from qbox.cli.context import CliState
from qbox.core.errors import SandboxNotFoundError
from qbox.sdk import Sandbox

SANDBOX_ID_PREFIX = "sb_"


def parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        pairs[key] = val
    return pairs


def resolve_sandbox(state: CliState, arg: str) -> str:
    """A sandbox id: ``sb_…`` as given, anything else looked up by its ``name`` label."""
    if arg.startswith(SANDBOX_ID_PREFIX):
        return arg
    matches = [s for s in Sandbox.list(config=state.config()) if s.labels.get("name") == arg]
    if not matches:
        raise SandboxNotFoundError(f"no sandbox named {arg!r}", details={"name": arg})
    if len(matches) > 1:
        ids = ", ".join(s.id for s in matches)
        raise click.UsageError(f"{len(matches)} sandboxes are named {arg!r} ({ids}); use an id")
    return matches[0].id
