"""The published client's `sandbox.shell()` and `qbox sandboxes ssh` against our server (§6)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.compat.conftest import published_env, run_published_script
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

SCRIPT = textwrap.dedent('''
    import json, time
    from qbox import Sandbox

    def until(sh, needle, seconds=30):
        seen = b""
        deadline = time.monotonic() + seconds
        while needle not in seen and time.monotonic() < deadline:
            chunk = sh.recv(timeout=1)
            if chunk:
                seen += chunk
        return seen

    out = {}
    sb = Sandbox.create("tpl_python", timeout=180)
    try:
        with sb.shell(cols=111, rows=33) as sh:
            sh.send("stty size; tty; echo $((6*7))x\\r")
            text = until(sh, b"42x").decode()
            out["size"] = "33 111" in text
            out["tty"] = "/dev/pts/" in text
            out["echo"] = "42x" in text
            sh.resize(140, 45)
            sh.send("sleep 0.2; stty size\\r")
            out["resized"] = b"45 140" in until(sh, b"45 140")
            sh.send("exit 0\\r")
            list(sh)  # iteration ends when the server closes the socket
            out["closed"] = True
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def test_published_client_shell(published_python: Path, qbox_for_compat: QboxUp) -> None:
    out = run_published_script(published_python, qbox_for_compat, SCRIPT)
    assert out == {"size": True, "tty": True, "echo": True, "resized": True,
                   "closed": True}


def test_published_cli_ssh_through_a_real_terminal(published_python: Path, qbox_for_compat: QboxUp,
                                                   tmp_path: Path) -> None:
    import pexpect

    env = published_env(qbox_for_compat, XDG_CONFIG_HOME=str(tmp_path), TERM="xterm")
    cli = str(published_python.parent / "qbox")
    made = subprocess.run([cli, "sandboxes", "create", "tpl_python"], env=env,
                          capture_output=True, text=True, timeout=200, cwd="/")
    assert made.returncode == 0, made.stdout + made.stderr
    sandbox_id = made.stdout.strip()  # a terminal-less `create` prints the id alone
    assert sandbox_id.startswith("sb_"), made.stdout
    try:
        child = pexpect.spawn(cli, ["sandboxes", "ssh", sandbox_id], env=env, encoding="utf-8",
                              timeout=30, dimensions=(27, 99), cwd="/")
        try:
            # Its raw mode flushes what was typed ahead (TCSAFLUSH): type once the prompt is up.
            child.expect(r"\$ ")
            child.sendline("echo ssh-$((2+3)); stty size")
            child.expect(r"ssh-5\r\n27 99")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0, child.before
    finally:
        subprocess.run([cli, "sandboxes", "kill", sandbox_id], env=env, capture_output=True, timeout=60, cwd="/")
