"""``--watch``/``-w`` on lists: the list again every few seconds until Ctrl-C (exit 0).

On a terminal with a human format the screen is redrawn; otherwise each refresh
is one line of JSON (or, under ``-o yaml``, one YAML document), so a pipe reads
a stream of snapshots. Sleeping goes through the environment's clock: tests
pass one that does not wait.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from qbox.cli import output
from qbox.cli.context import CliState
from qbox.core.timefmt import utcnow
from qbox.sdk._config import Clock

CLEAR_SCREEN = "\x1b[H\x1b[2J"
DEFAULT_INTERVAL = 5.0


def watch_options(default_interval: float = DEFAULT_INTERVAL) -> Callable[[Any], Any]:
    """``-w/--watch`` and ``--watch-interval SECONDS`` on a list command."""

    def decorate(func: Any) -> Any:
        func = click.option("--watch-interval", type=click.FloatRange(min=0.1), default=default_interval,
                            show_default=True, metavar="SECONDS", help="Seconds between refreshes.")(func)
        return click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl-C.")(func)

    return decorate


def watch(
    state: CliState,
    fetch: Callable[[], Sequence[Any]],
    to_data: Callable[[Any], Any],
    headers: Sequence[str],
    to_row: Callable[[Any], Sequence[Any]],
    *,
    noun: str,
    interval: float,
) -> None:
    """Print ``fetch()`` every ``interval`` seconds until Ctrl-C."""
    clock = state.env.clock or Clock()
    redraw = state.env.stdout_is_tty()
    try:
        while True:
            items = fetch()
            if state.format == "yaml":
                state.env.out("---\n" + output.to_yaml([to_data(i) for i in items]))
            elif state.json:
                state.env.out(output.to_json_line([to_data(i) for i in items]))
            else:
                if redraw:
                    state.env.out(CLEAR_SCREEN, nl=False)
                state.env.out(f"{utcnow():%H:%M:%S} UTC  {len(items)} {noun}, every {interval:g} s; Ctrl-C stops")
                state.emit_table(headers, [to_row(i) for i in items])
                if not redraw:
                    state.env.out()
            clock.sleep(interval)
    except KeyboardInterrupt:
        return
