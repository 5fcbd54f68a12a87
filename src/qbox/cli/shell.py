"""``qbox sandboxes ssh``: a terminal in a sandbox, bridged to this one.

With a terminal on stdin it is put in raw mode (every key, Ctrl-C included,
goes to the sandbox; its settings are restored however the command ends) and
window size changes follow. Without one, ``-c CMD`` still runs under a
terminal in the sandbox: stdin is forwarded (its end as Ctrl-D) and the output
streamed. The exit status is the remote one.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click

from qbox.cli.context import CliState, pass_state
from qbox.cli.exit_codes import ExitCode
from qbox.cli.sandbox_ref import resolve_sandbox
from qbox.core.errors import QboxError
from qbox.sdk._shell_ops import require_websockets

if TYPE_CHECKING:
    from qbox.sdk._shell import Shell

DEFAULT_SIZE = (80, 24)
END_OF_INPUT = "\x04"  # what a terminal sends for end-of-file (Ctrl-D)
READ_SIZE = 4096


def window_size(fd: int | None) -> tuple[int, int]:
    """The terminal's (cols, rows); 80×24 when there is none or it does not know."""
    if fd is None:
        return DEFAULT_SIZE
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (size.columns or DEFAULT_SIZE[0], size.lines or DEFAULT_SIZE[1])


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        # TCSADRAIN, not setraw's default TCSAFLUSH: what was typed ahead while the
        # shell opened is sent, not thrown away (as ssh does).
        tty.setraw(fd, termios.TCSADRAIN)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _exit_on_signal(signo: int, _frame: Any) -> None:
    # Unwinds through the ``finally`` blocks: the terminal is restored, the shell closed.
    raise SystemExit(128 + signo)


@contextlib.contextmanager
def signal_handlers(handlers: Mapping[signal.Signals, Any]) -> Iterator[None]:
    previous = {signo: signal.signal(signo, handler) for signo, handler in handlers.items()}
    try:
        yield
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Bridge:
    """Carries keystrokes up and output down until the shell exits.

    Output is copied by a thread; the calling thread waits on stdin and on a
    wake-up pipe that the output thread (at the end) and SIGWINCH write to.
    """

    def __init__(self, shell: Shell, in_fd: int, out_fd: int, tty_fd: int | None) -> None:
        self.shell = shell
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.tty_fd = tty_fd  # resizes follow this terminal; None: no terminal
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a signal handler writes to it and must never block
        self._done = threading.Event()
        self._resized = threading.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def run(self) -> None:
        pump = threading.Thread(target=self._copy_output, name="qbox-ssh-output", daemon=True)
        resizes = {signal.SIGWINCH: self._on_resize} if self.tty_fd is not None else {}
        try:
            with signal_handlers(resizes):
                pump.start()
                self._forward_input()
        finally:
            self.shell.close()
            pump.join(timeout=5)
            if not pump.is_alive():  # else it may still write to the pipe: leave it to the exit
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _copy_output(self) -> None:
        try:
            for chunk in self.shell:
                _write_all(self.out_fd, chunk)
        except OSError:
            pass  # our stdout went away; closing the shell is all that is left
        finally:
            self._done.set()
            self._wake()

    def _on_resize(self, _signo: int, _frame: Any) -> None:
        self._resized.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"x")

    def _forward_input(self) -> None:
        watched = [self.in_fd, self._wake_r]
        while not self._done.is_set():
            readable, _, _ = select.select(watched, [], [])
            if self._wake_r in readable:
                os.read(self._wake_r, 512)
            try:
                if self._resized.is_set():
                    self._resized.clear()
                    self.shell.resize(*window_size(self.tty_fd))
                if self.in_fd in readable and not self._forward_some(watched):
                    return
            except QboxError:
                return  # the connection closed under us; the output thread has the last word

    def _forward_some(self, watched: list[int]) -> bool:
        """Send what stdin has; False when there is nothing more to do."""
        data = os.read(self.in_fd, READ_SIZE)
        if data:
            if text := self._decoder.decode(data):
                self.shell.send(text)
            return True
        if self.tty_fd is not None:
            return False  # our terminal hung up
        self.shell.send(self._decoder.decode(b"", final=True) + END_OF_INPUT)
        watched.remove(self.in_fd)
        return True


@click.command("ssh")
@click.argument("sandbox")
@click.option("-c", "--command", metavar="CMD", help="Run CMD under a terminal instead of an interactive shell.")
@click.option("--cols", type=click.IntRange(1, 1000), help="Terminal width (default: this terminal's).")
@click.option("--rows", type=click.IntRange(1, 1000), help="Terminal height (default: this terminal's).")
@click.option("--user", help="The sandbox account (default: user).")
@pass_state
@click.pass_context
def ssh(
    ctx: click.Context,
    state: CliState,
    sandbox: str,
    command: str | None,
    cols: int | None,
    rows: int | None,
    user: str | None,
) -> None:
    """Open a terminal in a sandbox (or run -c CMD in one); exits with its status."""
    interactive = state.env.stdin_is_tty()
    if command is None and not interactive:
        raise click.UsageError("an interactive shell needs a terminal on stdin; use -c CMD to run a command")
    require_websockets()
    from qbox.sdk._shell import Shell

    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    tty_fd = in_fd if interactive else None
    local_cols, local_rows = window_size(tty_fd if tty_fd is not None else out_fd if os.isatty(out_fd) else None)
    sandbox_id = resolve_sandbox(state, sandbox)
    shell = Shell.open(
        sandbox_id, cols or local_cols, rows or local_rows, command=command, user=user, config=state.config()
    )
    sys.stdout.flush()
    bridge = Bridge(shell, in_fd, out_fd, tty_fd)
    with signal_handlers({signal.SIGTERM: _exit_on_signal, signal.SIGHUP: _exit_on_signal}):
        with raw_mode(tty_fd) if tty_fd is not None else contextlib.nullcontext():
            bridge.run()
    if shell.exit_code is None:
        reason = f": {shell.close_reason}" if shell.close_reason else ""
        state.env.err(f"qbox: the connection closed without an exit status (code {shell.close_code}{reason})")
        ctx.exit(ExitCode.ERROR)
    ctx.exit(shell.exit_code)
