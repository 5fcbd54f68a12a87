"""Everything the CLI touches outside itself, in one injectable object (httpie-style).

Tests build an ``Environment`` with a fake ``environ``, an ``httpx.MockTransport``
and a clock that never waits, and run the CLI in-process with click's
``CliRunner``; output goes through ``click.echo`` so the runner captures it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from qbox.sdk._config import Clock


@dataclass
class Environment:
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    transport: Any = None  # an httpx transport; None: real network
    clock: Clock | None = None
    stdout_isatty: bool | None = None  # None: ask the real stream
    stdin_isatty: bool | None = None

    def stdout_is_tty(self) -> bool:
        if self.stdout_isatty is not None:
            return self.stdout_isatty
        return sys.stdout.isatty()

    def stdin_is_tty(self) -> bool:
        if self.stdin_isatty is not None:
            return self.stdin_isatty
        return sys.stdin.isatty()

    def out(self, text: str = "", *, nl: bool = True) -> None:
        click.echo(text, nl=nl)

    def err(self, text: str = "", *, nl: bool = True) -> None:
        click.echo(text, err=True, nl=nl)

    def confirm(self, question: str) -> bool:
        return click.confirm(question, default=False, err=True)
