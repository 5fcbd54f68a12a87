"""``qbox audit``: read the audit log (optionally following it) and check its hash chain."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import click

from qbox.cli import output
from qbox.cli.context import CliState, json_option, pass_state
from qbox.cli.exit_codes import ExitCode
from qbox.core.timefmt import from_wire, utcnow
from qbox.sdk import Audit, AuditEntry, ConnectionConfig
from qbox.sdk._config import Clock

RELATIVE_TIME = re.compile(r"(\d+)([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time_bound(value: str, now: datetime) -> datetime:
    """``30m``, ``1h``, ``2d`` … before ``now``, or an ISO 8601 time (naive means UTC). ValueError otherwise."""
    match = RELATIVE_TIME.fullmatch(value.strip())
    if match:
        return now - timedelta(seconds=int(match[1]) * UNIT_SECONDS[match[2]])
    return from_wire(value)


class TimeBound(click.ParamType[datetime]):
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time_bound(str(value), utcnow())
        except ValueError:
            self.fail(f"expected a duration (30m, 1h, 2d, 1w) or an ISO 8601 time, got {value!r}", param, ctx)


def _line(entry: AuditEntry) -> str:
    when = output.cell(entry.ts) if entry.ts else str(entry.raw.get("ts") or output.EMPTY)[:19]
    cells = [when, output.cell(entry.actor), output.cell(entry.action), output.cell(entry.target_id), entry.outcome]
    return "  ".join(str(c) for c in cells)


def _print_stream(state: CliState, entries: Iterable[AuditEntry]) -> None:
    """For --follow: one line per entry (one compact JSON object per line with --json)."""
    for entry in entries:
        state.env.out(json.dumps(entry.raw, ensure_ascii=False) if state.json else _line(entry))


def _follow(state: CliState, config: ConnectionConfig, first: list[AuditEntry], since: datetime | None,
            interval: float, page_size: int, filters: dict[str, Any]) -> None:  # fmt: skip
    """Print ``first`` and then each new entry, oldest first, polling every ``interval`` s until Ctrl-C.

    Each poll asks for entries from the newest time seen (the server's
    ``from`` bound) and keeps those with an id above the highest seen: ids
    follow the hash chain, so this neither repeats nor drops entries that
    share a timestamp.
    """
    clock = config.clock or Clock()
    seen_id = max((e.id for e in first), default=0)
    since = max((e.ts for e in first if e.ts), default=since)
    _print_stream(state, reversed(first))
    try:
        while True:
            clock.sleep(interval)
            polled = Audit.iter(since=since, page_size=page_size, config=config, **filters)
            fresh = sorted((e for e in polled if e.id > seen_id), key=lambda e: e.id)
            _print_stream(state, fresh)
            if fresh:
                seen_id = fresh[-1].id
                since = max((e.ts for e in fresh if e.ts), default=since)
    except KeyboardInterrupt:
        return


@click.group("audit")
def audit() -> None:
    """Read and verify the audit log (admin)."""


@audit.command("logs")
@click.option("--since", type=TimeBound(), help="Entries at or after: 30m, 1h, 2d ago, or an ISO 8601 time.")
@click.option("--until", type=TimeBound(), help="Entries at or before: same forms as --since.")
@click.option("--user", "actor_id", metavar="ID", help="Only actions by this user id.")
@click.option("--action", help="Only this action, e.g. sandbox.create.")
@click.option("--target", "target_id", metavar="ID", help="Only actions on this id (a sandbox, key, user …).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Entries per page.")
@click.option("--cursor", help="The page after this one (nextCursor of a --json page).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              metavar="SECONDS", help="How often --follow polls.")  # fmt: skip
@json_option
@pass_state
def logs(
    state: CliState,
    since: datetime | None,
    until: datetime | None,
    actor_id: str | None,
    action: str | None,
    target_id: str | None,
    limit: int,
    cursor: str | None,
    follow: bool,
    interval: float,
) -> None:
    """Show audit entries, newest first (with --follow: oldest first, then new ones as they come)."""
    if follow and (until is not None or cursor is not None):
        raise click.UsageError("--follow shows new entries; it cannot be combined with --until or --cursor")
    config = state.config()
    filters: dict[str, Any] = {"until": until, "actor_id": actor_id, "action": action, "target_id": target_id}
    page = Audit.list(since=since, limit=limit, cursor=cursor, config=config, **filters)
    if follow:
        _follow(state, config, page.entries, since, interval, limit, filters)
        return
    if state.json:
        state.emit_json({"data": [e.raw for e in page.entries], "nextCursor": page.next_cursor})
        return
    for entry in page.entries:
        state.env.out(_line(entry))
    if page.next_cursor:
        state.env.err(f"(more: --cursor {page.next_cursor})")


@audit.command("verify")
@json_option
@pass_state
@click.pass_context
def verify(ctx: click.Context, state: CliState) -> None:
    """Recompute the audit log's hash chain; exit 1 if it is broken."""
    result = Audit.verify(config=state.config())
    if state.json:
        state.emit_json(result.raw)
    elif result.ok:
        state.env.out(f"ok: {result.checked} entries checked, the chain is intact")
    else:
        state.env.out(f"BROKEN at entry {result.first_bad_id}: {result.reason or 'unknown reason'} "
                      f"({result.checked} entries checked)")  # fmt: skip
    ctx.exit(ExitCode.OK if result.ok else ExitCode.ERROR)
