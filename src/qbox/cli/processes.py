"""The commands running in a sandbox: ``qbox sandboxes ps``, ``kill-process``, and a
command's output for ``qbox sandboxes logs SANDBOX --pid PID [-f]``."""

from __future__ import annotations

import contextlib
import json
import signal as signals
from collections.abc import Iterator

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.cli.sandbox_ref import resolve_sandbox
from qbox.core.errors import ProcessNotFoundError
from qbox.sdk import Sandbox

PROCESS_COLUMNS = ("PID", "ALIVE", "EXIT", "STARTED", "COMMAND")


def parse_signal(_ctx: click.Context | None, _param: click.Parameter | None, value: str) -> int:
    """A signal by number (``9``) or name (``KILL``, ``SIGKILL``)."""
    if value.isdigit():
        return int(value)
    name = value.upper()
    try:
        return int(signals.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise click.BadParameter(f"no signal named {value!r}") from None


@contextlib.contextmanager
def _connected(state: CliState, sandbox_id: str) -> Iterator[Sandbox]:
    """The sandbox, its connection closed afterwards; not ``with Sandbox``, which kills it."""
    sb = Sandbox.connect(sandbox_id, config=state.config())
    try:
        yield sb
    finally:
        sb.close()


@click.command("ps")
@click.argument("sandbox")
@json_option
@pass_state
def ps(state: CliState, sandbox: str) -> None:
    """List the commands started in a sandbox, running or exited."""
    with _connected(state, resolve_sandbox(state, sandbox)) as sb:
        found = sb.commands.list()
    if state.json:
        state.emit_json([p.raw for p in found])
        return
    rows = [[p.pid, p.alive, "" if p.alive else p.exit_code, p.started_at, " ".join(p.command)]
            for p in found]
    state.emit_table(PROCESS_COLUMNS, rows)


@click.command("kill-process")
@click.argument("sandbox")
@click.argument("pid", type=int)
@click.option("-s", "--signal", "signo", default="TERM", show_default=True, callback=parse_signal,
              help="Signal number or name; what is left after a grace period gets KILL.")
@json_option
@pass_state
def kill_process(state: CliState, sandbox: str, pid: int, signo: int) -> None:
    """Signal a command and everything it started."""
    sandbox_id = resolve_sandbox(state, sandbox)
    with _connected(state, sandbox_id) as sb:
        signalled = sb.commands.kill(pid, signo)
    if not signalled:
        raise ProcessNotFoundError(f"no process {pid} in {sandbox_id}", details={"pid": pid})
    if state.json:
        state.emit_json({"pid": pid, "signal": signo, "signalled": True})
    else:
        state.env.out(f"sent signal {signo} to process {pid} and its children")


def command_output(state: CliState, sandbox: str, pid: int, follow: bool) -> None:
    """Print a command's output: what it wrote so far, or (``follow``) also what it writes
    until it ends. Its stdout goes to ours, its stderr to ours."""
    as_json = state.explicit_format == "json"  # raw text by default, even into a pipe
    with _connected(state, resolve_sandbox(state, sandbox)) as sb:
        handle = sb.commands.connect(pid)
        if not follow:
            logs = handle.logs()
            if as_json:
                state.emit_json({"stdout": logs.stdout, "stderr": logs.stderr})
            else:
                state.env.out(logs.stdout, nl=False)
                state.env.err(logs.stderr, nl=False)
            return
        for chunk in handle:
            if as_json:  # one object per line as output arrives
                state.env.out(json.dumps({"stream": chunk.stream, "text": chunk.text},
                                         ensure_ascii=False))
            elif chunk.stream == "stdout":
                state.env.out(chunk.text, nl=False)
            else:
                state.env.err(chunk.text, nl=False)

