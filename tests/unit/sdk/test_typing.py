"""mypy --strict accepts the SDK used as documented and rejects its misuses, line by line.

One mypy run checks typing_sample.py (which must be clean) and a sample of
misuses written below, each line marked ``# E`` (where mypy must report an
error, and only there). It reads qbox with ``--follow-imports=silent``, so
only the samples are judged; with a cold cache it takes about 6 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).with_name("typing_sample.py")

MISUSES = '''
from __future__ import annotations

from collections.abc import Generator
from typing import Any

from qbox import AsyncSandbox, Sandbox
from qbox.sdk._steps import HttpRequest, IoStep, Op, Read, Send, SyncIo, AsyncIo


async def wrong_callbacks(sb: AsyncSandbox) -> None:
    async def counts(n: int) -> None: ...
    async def answers(text: str) -> int: return 1
    await sb.commands.run("x", on_stdout=counts)  # E
    await sb.commands.run("x", on_stdout=answers)  # E
    await sb.run_code("x", on_result=counts)  # E


def wrong_hybrid_calls(sb: Sandbox) -> None:
    Sandbox.get_info()  # E
    sb.get_info("sb_1")  # E
    sb.logs(tail="3")  # E
    count: int = Sandbox.logs("sb_1")  # E


def unchecked_answer(request: HttpRequest) -> Op[int]:
    response = yield Send(request)  # a bare yield answers ``object``
    return response.status  # E


def wrong_answer(request: HttpRequest) -> Op[str]:
    chunk = yield from Read(None)
    response = yield from Send(request)
    assert chunk is not None
    chunk.decode()
    return response.status  # E


class Wrong(IoStep[float]):
    def run(self, io: SyncIo) -> float:
        return io.read(None)  # E

    async def arun(self, io: AsyncIo) -> float:
        return io.now()
'''


def mypy_errors(output: str, path: Path) -> dict[int, list[str]]:
    """The error messages mypy printed for ``path``, by line (it names files as it was given them)."""
    errors: dict[int, list[str]] = {}
    for name, line, message in re.findall(r"^(.+?):(\d+): error: (.*)$", output, re.MULTILINE):
        if Path(name).name == path.name:
            errors.setdefault(int(line), []).append(message)
    return errors


def test_mypy_accepts_the_documented_uses_and_rejects_the_misuses(tmp_path: Path) -> None:
    misuses = tmp_path / "misuses.py"
    misuses.write_text(MISUSES)
    command = [
        sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--python-version=3.11",
        f"--cache-dir={tmp_path / 'cache'}", "--no-error-summary", "--show-error-codes",
        "--hide-error-context", "--no-color-output",
        str(SAMPLE), str(misuses),
    ]  # fmt: skip
    started = time.monotonic()
    # From tmp_path, so only these flags apply (not the project's [tool.mypy]).
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode in (0, 1), done.stderr
    assert mypy_errors(done.stdout, SAMPLE) == {}, done.stdout
    marked = {number for number, line in enumerate(MISUSES.splitlines(), 1) if line.endswith("# E")}
    reported = mypy_errors(done.stdout, misuses)
    assert sorted(reported) == sorted(marked), done.stdout
    assert took < 60, f"mypy took {took:.1f}s"
