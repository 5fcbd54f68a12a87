"""Per-invocation CLI state: the global options, the output format, the profile, the SDK connection.

Where the connection comes from, per field (WIRE_PROTOCOL.md §8.1): a global
flag > the environment (``QBOX_API_KEY``, ``QBOX_BASE_URL``, …) > the profile
(``--profile``, else ``$QBOX_PROFILE``, else the config file's active one) >
the defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import httpx

from qbox.cli import output
from qbox.cli.config_file import DEFAULT_PROFILE, ConfigFile, config_error, config_path
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
    profile: str | None = None  # --profile
    assume_yes: bool = False  # -y before the noun, or QBOX_ASSUME_YES=1
    verify_tls: bool = True  # --no-tls-verify turns it off
    quiet: bool = False
    _config_file: ConfigFile | None = field(default=None, repr=False)

    @property
    def explicit_format(self) -> str | None:
        """The format the user asked for, if any (``--json`` or ``-o``)."""
        return "json" if self.json_flag else self.output

    @property
    def format(self) -> str:
        return self.explicit_format or ("table" if self.env.stdout_is_tty() else "json")

    @property
    def json(self) -> bool:
        """Machine output (``-o json`` or ``-o yaml``): every ``if state.json: state.emit_json(…)``
        path serves both, ``emit_json`` rendering the format asked for."""
        return self.format in output.DATA_FORMATS

    @property
    def config_file(self) -> ConfigFile:
        """The profiles file, read on first use (a command that needs no connection never reads it)."""
        if self._config_file is None:
            self._config_file = ConfigFile.load(config_path(self.env.environ))
        return self._config_file

    @property
    def profile_name(self) -> str:
        """--profile, else $QBOX_PROFILE, else the file's active profile, else "default"."""
        chosen = self.profile or self.env.environ.get("QBOX_PROFILE", "").strip()
        return chosen or self.config_file.active_profile or DEFAULT_PROFILE

    def profile_values(self) -> dict[str, Any]:
        """The profile in use; a profile named on purpose (flag or env) must exist."""
        name = self.profile_name
        values = self.config_file.profiles.get(name)
        if values is None:
            if self.profile or self.env.environ.get("QBOX_PROFILE", "").strip():
                raise config_error(f"no profile {name!r} in {self.config_file.path} (see: qbox auth profiles list)")
            return {}
        return values

    def config(self, profile: dict[str, Any] | None = None) -> ConnectionConfig:
        """The connection: flags > environment > ``profile`` (default: the one in use) > defaults."""
        if profile is None:
            profile = self.profile_values()
        transport = self.env.transport
        if transport is None and not (self.verify_tls and profile.get("verify_tls", True)):
            transport = httpx.HTTPTransport(verify=False)
        return ConnectionConfig.from_environ(
            self.env.environ,
            fallback=ConnectionConfig(
                api_key=profile.get("api_key"),
                base_url=profile.get("base_url"),
                request_timeout=profile.get("request_timeout"),
            ),
            api_key=self.api_key,
            base_url=self.base_url,
            request_timeout=self.request_timeout,
            transport=transport,
            clock=self.env.clock,
        )

    def info(self, text: str) -> None:
        """A line for the person at the terminal (stderr, so piped stdout stays data); -q drops it."""
        if not self.quiet:
            self.env.err(text)

    def emit_json(self, data: Any) -> None:
        """``data`` as JSON, or as YAML under ``-o yaml``."""
        self.env.out(output.render(data, self.format))

    def emit(self, data: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A list: ``data`` for machines (json/yaml), else a table of ``rows``."""
        if self.json:
            self.emit_json(data)
        else:
            self.emit_table(headers, rows)

    def emit_item(self, data: Any, pairs: Sequence[tuple[str, Any]]) -> None:
        """One object: ``data`` for machines (json/yaml), else key/value lines."""
        if self.json:
            self.emit_json(data)
        else:
            self.emit_fields(pairs)

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
            if isinstance(error.details, dict) and error.details.get("reason") == "missing_api_key":
                self.env.err("hint: `qbox auth login` saves a key for every later command; or set QBOX_API_KEY")
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
    if yes or state.assume_yes or state.env.environ.get("QBOX_ASSUME_YES") == "1":
        return
    if state.env.stdin_is_tty() and state.env.confirm(question):
        return
    raise QboxError(f"not confirmed; {consequence} (pass -y to skip the question)", code="declined", status=0)
