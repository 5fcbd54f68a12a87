"""Per-invocation CLI state: the global options, the output format, the SDK connection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from qbox.cli import output
from qbox.cli.environment import Environment
from qbox.cli.exit_codes import ExitCode, exit_code_for
from qbox.core.errors import QboxError
from qbox.sdk import ConnectionConfig

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    env: Environment
    api_key: str | None = None
    base_url: str | None = None
    request_timeout: float | None = None
    output: str | None = None
    json_flag: bool = False

    @property
    def explicit_format(self) -> str | None:
        """The format the user asked for, if any (``--json`` or ``-o``)."""
        return "json" if self.json_flag else self.output

    @property
    def format(self) -> str:
        return self.explicit_format or ("table" if self.env.stdout_is_tty() else "json")

    @property
    def json(self) -> bool:
        return self.format == "json"

    def config(self) -> ConnectionConfig:
        return ConnectionConfig.from_environ(
            self.env.environ,
            api_key=self.api_key,
            base_url=self.base_url,
            request_timeout=self.request_timeout,
            transport=self.env.transport,
            clock=self.env.clock,
        )

    def emit_json(self, data: Any) -> None:
        self.env.out(output.to_json(data))

    def emit_table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.env.out(output.table(headers, rows))

    def emit_fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        self.env.out(output.fields(pairs))

    def report_error(self, error: QboxError) -> ExitCode:
        code = exit_code_for(error)
        if self.json:
            self.emit_json(output.error_object(error, code))
        else:
            self.env.err(output.error_line(error))
        return code


pass_state = click.make_pass_decorator(CliState)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    state = ctx.find_object(CliState)
    if value and state is not None:
        state.json_flag = True


def json_option(func: F) -> F:
    """``--json``: shorthand for ``-o json`` on this command."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print JSON (same as -o json).",
    )(func)


def confirm_or_decline(state: CliState, question: str, *, yes: bool, consequence: str) -> None:
    """Ask ``question`` unless ``-y`` or ``QBOX_ASSUME_YES=1``; no terminal to ask on means no (exit 10)."""
    if yes or state.env.environ.get("QBOX_ASSUME_YES") == "1":
        return
    if state.env.stdin_is_tty() and state.env.confirm(question):
        return
    raise QboxError(f"not confirmed; {consequence} (pass -y to skip the question)", code="declined", status=0)
