"""The published qbox client drives our server unmodified."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.compat.conftest import published_env, run_published_script
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

SCRIPT = textwrap.dedent('''
    import json, sys
    import qbox
    from qbox import Sandbox

    out = {"version": qbox.__version__}
    sb = Sandbox.create("tpl_python", timeout=120, metadata={"name": "compat"}, envs={"GREETING": "hi"})
    out["id"] = sb.sandbox_id
    info = sb.get_info()
    out["state"] = info.state
    out["metadata"] = dict(info.metadata)
    r = sb.commands.run("echo $GREETING; python3 -c 'print(6*7)'")
    out["run"] = [r.exit_code, r.stdout, r.stderr]
    r = sb.commands.run("echo bad >&2; exit 3", raise_on_error=False)
    out["fail"] = [r.exit_code, r.stdout, r.stderr]
    try:
        sb.commands.run("exit 5")
        out["raised"] = None
    except qbox.CommandFailedError as exc:
        out["raised"] = type(exc).__name__
    r = sb.commands.run_argv(["python3", "-c", "import os; print(os.getuid())"])
    out["argv"] = r.stdout
    handle = sb.commands.run("sleep 0.3; echo done", background=True)
    res = handle.wait()
    out["background"] = [res.exit_code, res.stdout]
    out["processes"] = len(sb.commands.list())
    try:
        sb.commands.run("sleep 30", timeout=1)
        out["timeout"] = None
    except qbox.CommandTimeoutError as exc:
        out["timeout"] = type(exc).__name__
    sb.set_timeout(600)
    out["timeoutSeconds"] = sb.get_info().timeout
    listed = [s.sandbox_id for s in Sandbox.list()]
    out["listed"] = sb.sandbox_id in listed
    same = Sandbox.connect(sb.sandbox_id)
    out["connected"] = same.commands.run("echo again").stdout
    out["killed"] = sb.kill()
    out["killed_again"] = Sandbox.kill_by_id(sb.sandbox_id)  # 409 sandbox_not_active is swallowed
    out["final_state"] = [s.state for s in Sandbox.list() if s.sandbox_id == sb.sandbox_id]
    try:
        Sandbox.connect("sb_doesnotexist")
        out["missing"] = None
    except qbox.SandboxNotFoundError as exc:
        out["missing"] = type(exc).__name__
    print(json.dumps(out))
''')


def test_published_client_create_run_timeout_kill(published_python: Path, qbox_for_compat: QboxUp) -> None:
    out = run_published_script(published_python, qbox_for_compat, SCRIPT)
    assert out["version"] == "1.4.1"
    assert out["id"].startswith("sb_")
    assert out["state"] == "running"
    assert out["metadata"] == {"name": "compat"}
    assert out["run"] == [0, "hi\n42\n", ""]
    assert out["fail"] == [3, "", "bad\n"]
    assert out["raised"] == "CommandFailedError"
    assert out["argv"] == "1000\n"
    assert out["background"] == [0, "done\n"]
    assert out["processes"] >= 4
    assert out["timeout"] == "CommandTimeoutError"
    assert out["timeoutSeconds"] == 600
    assert out["listed"] is True
    assert out["connected"] == "again\n"
    assert out["killed"] is True and out["killed_again"] is True
    assert out["final_state"] == ["killed"]
    assert out["missing"] == "SandboxNotFoundError"


def test_published_cli_doctor_quick(published_python: Path, qbox_for_compat: QboxUp) -> None:
    cli = published_python.parent / "qbox"
    env = published_env(qbox_for_compat, XDG_CONFIG_HOME="/nonexistent-qbox-cfg")
    done = subprocess.run([str(cli), "-o", "json", "version"], env=env, capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert "1.1.0" in done.stdout
