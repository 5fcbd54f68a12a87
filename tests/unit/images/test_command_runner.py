"""The real subprocess runner, exercised with the Python interpreter only."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from qbox.agent.images.runner import EXIT_NOT_FOUND, OUTPUT_TAIL_LINES, SubprocessRunner


async def test_lines_from_both_streams_reach_the_callback() -> None:
    lines: list[str] = []
    script = "import sys; print('out'); print('err', file=sys.stderr); print('', flush=True)"

    result = await SubprocessRunner().run([sys.executable, "-c", script], on_output=lines.append)

    assert result.ok
    assert sorted(lines) == ["err", "out"]
    assert sorted(result.output_tail.splitlines()) == ["err", "out"]


async def test_exit_status_and_tail() -> None:
    script = "import sys\nfor i in range(100): print(i)\nsys.exit(3)"

    result = await SubprocessRunner().run([sys.executable, "-c", script])

    assert result.returncode == 3
    assert not result.ok
    assert result.output_tail.splitlines() == [str(i) for i in range(100 - OUTPUT_TAIL_LINES, 100)]


async def test_long_lines_and_bad_bytes_do_not_break_reading() -> None:
    script = "import sys; sys.stdout.buffer.write(b'x' * 300000 + b'\\xff\\r\\nend\\n')"

    result = await SubprocessRunner().run([sys.executable, "-c", script])

    assert result.ok
    assert result.output_tail.splitlines()[-1] == "end"
    assert "\ufffd" in result.output_tail


async def test_missing_tool_is_exit_127() -> None:
    result = await SubprocessRunner().run(["qbox-no-such-tool-xyz", "--help"])
    assert result.returncode == EXIT_NOT_FOUND
    assert "not found" in result.output_tail


async def test_env_adds_to_the_environment() -> None:
    script = "import os; print(os.environ['QBOX_T'], 'PATH' in os.environ)"
    result = await SubprocessRunner().run([sys.executable, "-c", script], env={"QBOX_T": "v"})
    assert result.output_tail == "v True"


async def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The tool starts a grandchild, as mmdebstrap starts apt and dpkg.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = asyncio.Event()
    task = asyncio.create_task(
        SubprocessRunner().run([sys.executable, "-c", script], on_output=lambda _: started.set())
    )
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    child = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(child):
            break
        await asyncio.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent was killed too).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
