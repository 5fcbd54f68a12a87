"""``qbox sandboxes run-code``: run code in a sandbox's interpreter (WIRE_PROTOCOL.md §8.2).

On a terminal the output streams as it is produced; otherwise (or with
``-o json``) the execution is fetched in one request and printed whole.
An execution that raised or ran out of time exits 1.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.cli.exit_codes import ExitCode
from qbox.cli.sandbox_ref import parse_pairs, resolve_sandbox
from qbox.sdk import Execution, ExecutionError, Result, Sandbox


def read_source(state: CliState, code: str | None, path: str | None) -> str:
    """The code to run: ``-e CODE``, ``-f PATH`` (``-`` for stdin), or stdin when it is not a terminal."""
    if code is not None and path is not None:
        raise click.UsageError("give the code with -e/--code or -f/--file, not both")
    if code is not None:
        return code
    if path == "-" or (path is None and not state.env.stdin_is_tty()):
        return sys.stdin.read()
    if path is None:
        raise click.UsageError("no code: give it with -e/--code, -f/--file, or on stdin")
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--file") from None


def save_paths(path: str, count: int) -> list[Path]:
    """Where ``count`` images go: ``path`` itself for one, else ``name-1.ext``, ``name-2.ext``, …"""
    target = Path(path)
    if count == 1:
        return [target]
    return [target.with_name(f"{target.stem}-{i}{target.suffix}") for i in range(1, count + 1)]


def save_images(state: CliState, results: list[Result], path: str) -> None:
    images = [r for r in results if r.image_mime is not None]
    if not images:
        state.env.err("no image to save")
        return
    for result, target in zip(images, save_paths(path, len(images)), strict=True):
        result.save(target)
        state.env.err(f"saved {result.image_mime} to {target}")


def execution_json(execution: Execution) -> dict[str, Any]:
    error = execution.error
    return {
        "contextId": execution.context_id,
        "language": execution.language,
        "text": execution.text,
        "stdout": "".join(execution.logs.stdout),
        "stderr": "".join(execution.logs.stderr),
        "results": [
            {
                "isMainResult": r.is_main_result,
                "text": r.text,
                "data": {mime: base64.b64encode(raw).decode("ascii") for mime, raw in r.data.items()},
            }
            for r in execution.results
        ],
        "error": None if error is None else {"name": error.name, "value": error.value, "traceback": error.traceback},
        "executionMs": execution.execution_ms,
        "timedOut": execution.timed_out,
    }


class _Printer:
    """Prose output, event by event: stdout and result text to stdout, the rest to stderr."""

    def __init__(self, state: CliState) -> None:
        self.env = state.env

    def stdout(self, text: str) -> None:
        self.env.out(text, nl=False)

    def stderr(self, text: str) -> None:
        self.env.err(text, nl=False)

    def result(self, result: Result) -> None:
        if result.text is not None:
            self.env.out(result.text)
        elif result.image_mime is not None:
            self.env.err(f"[{result.image_mime} display: save it with --save-display PATH]")

    def error(self, error: ExecutionError) -> None:
        for line in error.traceback or [str(error)]:
            self.env.err(line)

    def whole(self, execution: Execution) -> None:
        self.stdout("".join(execution.logs.stdout))
        self.stderr("".join(execution.logs.stderr))
        for result in execution.results:
            self.result(result)
        if execution.error is not None:
            self.error(execution.error)


@click.command("run-code")
@click.argument("sandbox")
@click.option("-e", "--code", help="The code to run.")
@click.option("-f", "--file", "path", metavar="PATH", help="Run this file's code (- for stdin).")
@click.option("-l", "--language", help="Its language (default: the sandbox's default, Python).")
@click.option("--context", "context_id", metavar="ID", help="Run in this context (keeps state between runs).")
@click.option("--env", "envs", multiple=True, metavar="K=V", help="Set an env variable for this run.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              help="Stop the code after N s.")
@click.option("--save-display", "save_path", metavar="PATH",
              help="Save the images it shows to PATH (PATH-1, PATH-2, … for several).")
@json_option
@pass_state
@click.pass_context
def run_code(
    ctx: click.Context,
    state: CliState,
    sandbox: str,
    code: str | None,
    path: str | None,
    language: str | None,
    context_id: str | None,
    envs: tuple[str, ...],
    timeout: float,
    save_path: str | None,
) -> None:
    """Run code in SANDBOX's interpreter: -e CODE, -f FILE, or on stdin.

    Prints what it writes, its displays and its value; exits 1 if it raised.
    With --json (or piped), one JSON object with all of it.
    """
    source = read_source(state, code, path)
    env_vars = parse_pairs(envs, "--env") or None
    printer = _Printer(state)
    streaming = not state.json and state.env.stdout_is_tty()
    sb = Sandbox.connect(resolve_sandbox(state, sandbox), config=state.config())
    try:  # not ``with``: that would kill the sandbox
        if streaming:
            execution = sb.run_code(
                source, language, context_id, env=env_vars, timeout=timeout,
                on_stdout=printer.stdout, on_stderr=printer.stderr, on_result=printer.result, on_error=printer.error,
            )
        else:
            execution = sb.run_code(source, language, context_id, env=env_vars, timeout=timeout)
    finally:
        sb.close()
    if state.json:
        state.emit_json(execution_json(execution))
    elif not streaming:
        printer.whole(execution)
    if execution.timed_out:
        state.env.err(f"error: the code ran out of time ({timeout:g}s)")
    if save_path is not None:
        save_images(state, execution.results, save_path)
    ctx.exit(ExitCode.OK if execution.ok else ExitCode.ERROR)
