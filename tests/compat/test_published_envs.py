"""The published client's `sandbox.envs` and `qbox sandboxes envs …` against our server."""

from __future__ import annotations

import json
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

    out = {}
    env_file = sys.argv[1]
    sb = Sandbox.create("tpl_python", timeout=120, envs={"FROM_SPAWN": "s"})
    try:
        e = sb.envs
        e.set({"A": "1"}, B="two words")
        e.set(API_TOKEN="t0ken")
        out["get"] = [e.get("A"), e.get("B"), e.get("NOPE", "dflt")]
        out["masked"] = e.get_all(mask=True)["API_TOKEN"]
        out["revealed"] = e.get_all()["API_TOKEN"]
        out["sources"] = sorted({(v.key, v.source) for v in e.list()
                                 if v.key in ("A", "FROM_SPAWN", "QBOX_SANDBOX_ID")})
        out["ran"] = sb.commands.run("sh -c 'echo $A:$B:$FROM_SPAWN'").stdout
        e.delete("A")
        out["deleted"] = "A" in e.get_all()
        result = e.upload_dotenv(env_file)
        out["upload"] = [result.applied, result.skipped,
                         [[r.line, r.reason != "", r.key] for r in result.rejected]]
        out["upload_text"] = e.upload_dotenv("TEXT_ONE=1\\nTEXT_TWO=2\\n").applied
        out["after_upload"] = sb.commands.run("sh -c 'echo $QUOTED'").stdout
        e.set_all({"ONLY": "o"})
        out["set_all"] = sorted(v.key for v in e.list() if v.source == "user")
        e.clear()
        out["cleared"] = sorted(v.key for v in e.list() if v.source == "user")
        try:
            e.set({"QBOX_NOPE": "x"})
            out["reserved"] = None
        except qbox.QboxError as exc:
            out["reserved"] = [type(exc).__name__, exc.reason, sorted(getattr(exc, "field_errors", {}) or {})]
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def test_published_client_envs(published_python: Path, qbox_for_compat: QboxUp, tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("# settings\nexport QUOTED='a b'\nbroken line\nQBOX_X=1\n")
    out = run_published_script(published_python, qbox_for_compat, SCRIPT, str(env_file))
    assert out["get"] == ["1", "two words", "dflt"]
    assert out["masked"] == "********" and out["revealed"] == "t0ken"
    assert out["sources"] == [["A", "user"], ["FROM_SPAWN", "user"], ["QBOX_SANDBOX_ID", "system"]]
    assert out["ran"] == "1:two words:s\n"
    assert out["deleted"] is False
    assert out["upload"] == [["QUOTED"], 1, [[3, True, None], [4, True, "QBOX_X"]]]
    assert out["upload_text"] == ["TEXT_ONE", "TEXT_TWO"]
    assert out["after_upload"] == "a b\n"
    assert out["set_all"] == ["ONLY"]
    assert out["cleared"] == []
    assert out["reserved"][1] == "validation_error"
    assert out["reserved"][2] == ["envs.QBOX_NOPE"]


def test_published_cli_envs(published_python: Path, qbox_for_compat: QboxUp, tmp_path: Path) -> None:
    cli = str(published_python.parent / "qbox")
    env = published_env(qbox_for_compat, XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args], env=env, input=stdin, capture_output=True, text=True,
                              timeout=120, cwd=str(tmp_path))

    created = run("sandboxes", "create", "tpl_python", "--timeout", "120")
    assert created.returncode == 0, created.stderr
    sb = created.stdout.strip()
    try:
        def listed(*flags: str) -> dict[str, dict[str, str]]:
            done = run("-o", "json", "sandboxes", "envs", "list", sb, *flags)
            assert done.returncode == 0, done.stderr
            return {e["key"]: e for e in json.loads(done.stdout)}

        assert run("sandboxes", "envs", "set", sb, "A=1", "DB_PASSWORD=pw").returncode == 0
        assert listed()["DB_PASSWORD"]["value"] == "********"  # masked unless --reveal
        assert listed("--reveal")["DB_PASSWORD"]["value"] == "pw"
        assert run("sandboxes", "envs", "set", sb, "ONLY=o", "--replace").returncode == 0
        assert {k for k, e in listed().items() if e["source"] == "user"} == {"ONLY"}
        assert run("sandboxes", "envs", "delete", sb, "ONLY").returncode == 0
        assert "ONLY" not in listed()
        env_file = tmp_path / ".env"
        env_file.write_text("X=1\nnot a line\n")
        uploaded = run("sandboxes", "envs", "upload", sb, str(env_file))
        assert uploaded.returncode == 0, uploaded.stderr
        assert "applied 1, skipped 0, rejected 1" in uploaded.stdout + uploaded.stderr
        assert run("sandboxes", "envs", "upload", sb, "-", stdin="Y=2\n").returncode == 0
        assert listed()["Y"]["value"] == "2"
        cleared = run("-y", "sandboxes", "envs", "clear", sb)
        assert cleared.returncode == 0, cleared.stderr
        assert {e["source"] for e in listed().values()} == {"system"}
        refused = run("sandboxes", "envs", "set", sb, "QBOX_A=1")
        assert refused.returncode == 7, refused.stderr
        missing = run("sandboxes", "envs", "list", "sb_doesnotexist1")
        assert missing.returncode == 4, missing.stderr
    finally:
        run("-y", "sandboxes", "kill", sb)
