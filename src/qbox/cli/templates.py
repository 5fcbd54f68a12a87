"""``qbox templates``: what sandboxes are created from."""

from __future__ import annotations

from typing import Any

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.sdk import TemplateInfo, Templates

TEMPLATE_COLUMNS = ("ID", "NAME", "STATUS", "VCPUS", "MEMORY", "SIZE (MiB)", "UPDATED")


def _row(info: TemplateInfo) -> list[Any]:
    return [info.id, info.name, info.status, info.default_vcpus, info.default_memory_mb,
            info.size_bytes // (1024 * 1024), info.updated_at]


@click.group("templates")
def templates() -> None:
    """List and inspect templates."""


@templates.command("list")
@click.option("--service", help="Only templates offering this service type (e.g. code-interpreter).")
@json_option
@pass_state
def list_(state: CliState, service: str | None) -> None:
    """List templates."""
    found = Templates.list(service=service, config=state.config())
    if state.json:
        state.emit_json([t.raw for t in found])
    else:
        state.emit_table(TEMPLATE_COLUMNS, [_row(t) for t in found])


@templates.command("get")
@click.argument("template")
@json_option
@pass_state
def get(state: CliState, template: str) -> None:
    """Show TEMPLATE (a name or tpl_ id)."""
    info = Templates.get(template, config=state.config())
    if state.json:
        state.emit_json(info.raw)
        return
    state.emit_fields([
        ("ID", info.id), ("Name", info.name), ("Status", info.status),
        ("Build error", info.build_error), ("Image", info.image_ref), ("Digest", info.image_digest),
        ("Size (MiB)", info.size_bytes // (1024 * 1024)), ("vCPUs", info.default_vcpus),
        ("Memory (MiB)", info.default_memory_mb), ("SSH", info.enable_ssh),
        ("Services", [s.name for s in info.services]), ("Tags", list(info.tags)),
        ("Created", info.created_at), ("Updated", info.updated_at),
    ])
