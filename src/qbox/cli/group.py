"""The root command group: lazy sub-commands, hidden aliases, and errors turned into exit codes.

Lazy commands are imported only when invoked, so ``qbox --help`` and every
client command run without the ``server`` extra (FastAPI, SQLAlchemy, …).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

from qbox.cli.context import CliState
from qbox.cli.environment import Environment
from qbox.core.errors import QboxError

# Top-level modules that only the ``server`` extra installs.
SERVER_EXTRA_MODULES = frozenset(
    {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "pydantic_settings"}
)
INSTALL_HINT = "pip install 'qbox[server]'"


def _missing_server_part(exc: ModuleNotFoundError, module_name: str) -> bool:
    missing = exc.name or ""
    if missing.split(".")[0] in SERVER_EXTRA_MODULES:
        return True
    return missing == module_name or module_name.startswith(missing + ".")


def _unavailable(name: str, help_text: str, missing: str) -> click.Command:
    def refuse() -> None:
        raise click.ClickException(
            f"'qbox {name}' needs the server components, which are not installed "
            f"(no module {missing!r}): {INSTALL_HINT}"
        )

    return click.Command(
        name,
        callback=refuse,
        help=f"{help_text} (needs {INSTALL_HINT})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


class QboxGroup(click.Group):
    def __init__(
        self,
        *args: Any,
        lazy_commands: Mapping[str, tuple[str, str]] | None = None,
        aliases: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # name -> ("package.module:attribute", short help shown without importing it)
        self.lazy_commands = dict(lazy_commands or {})
        self.aliases = dict(aliases or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self.aliases.get(cmd_name, cmd_name)
        command = super().get_command(ctx, name)
        if command is None and name in self.lazy_commands:
            command = self._load(name)
        return command

    def _load(self, name: str) -> click.Command:
        target, help_text = self.lazy_commands[name]
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not _missing_server_part(exc, module_name):
                raise
            return _unavailable(name, help_text, exc.name or module_name)
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands and name not in self.commands:
                rows.append((name, self.lazy_commands[name][1]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QboxError as error:
            state = ctx.find_object(CliState) or CliState(Environment())
            ctx.exit(state.report_error(error))
