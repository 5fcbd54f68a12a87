from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from qbox.cli.environment import Environment
from qbox.cli.main import main
from tests.unit.sdk.fakes import API_KEY, BASE_URL, FakeClock, FakeServer


@dataclass
class Cli:
    """Runs ``qbox`` in-process against a FakeServer."""

    server: FakeServer = field(default_factory=FakeServer)
    environ: dict[str, str] = field(default_factory=lambda: {"QBOX_API_KEY": API_KEY, "QBOX_BASE_URL": BASE_URL})

    def __call__(
        self,
        *args: str,
        tty: bool = False,
        stdin_tty: bool = False,
        input: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Result:
        env = Environment(
            environ={**self.environ, **(environ or {})},
            transport=httpx.MockTransport(self.server.handle),
            clock=FakeClock(),
            stdout_isatty=tty,
            stdin_isatty=stdin_tty,
        )
        return CliRunner().invoke(main, list(args), obj=env, input=input, catch_exceptions=False)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    # The config file (profiles) is looked for under XDG_CONFIG_HOME: never this machine's own.
    cli = Cli()
    cli.environ["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return cli
