"""The published client's `sandbox.files` and `qbox sandboxes files …` against our server."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.compat.conftest import published_env, run_published_script
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import qbox
    from qbox import Sandbox

    out = {}
    local = sys.argv[1]
    sb = Sandbox.create("tpl_python", timeout=120)
    try:
        f = sb.files
        f.write("/home/user/hello.txt", "héllo\\n")
        out["read"] = f.read("/home/user/hello.txt")
        f.write("notes/raw.bin", bytes(range(256)), mode=0o600)
        out["bytes"] = list(f.read("/home/user/notes/raw.bin", as_bytes=True)) == list(range(256))
        try:
            f.read("/home/user/notes/raw.bin")
            out["encoding"] = None
        except qbox.FileEncodingError as exc:
            out["encoding"] = type(exc).__name__
        f.append("/home/user/hello.txt", "more\\n")
        out["appended"] = f.read("/home/user/hello.txt")
        f.append("/home/user/new.txt", "first")
        out["append_new"] = f.read("/home/user/new.txt")
        st = f.stat("/home/user/notes/raw.bin")
        out["stat"] = [st.exists, st.size, st.mode, st.is_dir, st.is_symlink,
                       st.modified_at is not None]
        out["exists"] = [f.exists("/home/user/hello.txt"), f.exists("/home/user/nope")]
        f.mkdir("/home/user/tree/a/b")
        f.mkdir("/home/user/private", mode=0o700, parents=False)
        f.write("/home/user/tree/a/b/leaf.txt", "leaf")
        sb.commands.run("ln -s /home/user/tree /home/user/tree/a/loop")
        entries = f.list("/home/user/tree", recursive=True)
        out["recursive"] = sorted((e.path, e.is_dir) for e in entries)
        out["private"] = sb.commands.run("stat -c %a /home/user/private").stdout
        f.rename("/home/user/tree/a/b/leaf.txt", "/home/user/leaf.txt")
        out["renamed"] = f.read("/home/user/leaf.txt")
        f.remove("/home/user/tree", recursive=True)
        out["removed"] = f.exists("/home/user/tree")
        try:
            f.read("/home/user/missing.txt")
            out["missing"] = None
        except qbox.QboxError as exc:
            out["missing"] = [type(exc).__name__, exc.reason]
        try:
            f.remove("/home/user/private/../notes")
            out["conflict"] = None
        except qbox.QboxError as exc:
            out["conflict"] = [type(exc).__name__, exc.reason]
        f.upload(local, "/home/user/up.bin")
        f.download("/home/user/up.bin", local + ".back")
        out["roundtrip"] = open(local, "rb").read() == open(local + ".back", "rb").read()
        out["owner"] = sb.commands.run("stat -c %U /home/user/up.bin").stdout
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def test_published_client_files(published_python: Path, qbox_for_compat: QboxUp, tmp_path: Path) -> None:
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    out = run_published_script(published_python, qbox_for_compat, SCRIPT, str(local))
    assert out["read"] == "héllo\n"
    assert out["bytes"] is True
    assert out["encoding"] == "FileEncodingError"
    assert out["appended"] == "héllo\nmore\n"
    assert out["append_new"] == "first"
    assert out["stat"] == [True, 256, "-rw-------", False, False, True]
    assert out["exists"] == [True, False]
    assert out["recursive"] == [["/home/user/tree/a", True], ["/home/user/tree/a/b", True],
                                ["/home/user/tree/a/b/leaf.txt", False],
                                ["/home/user/tree/a/loop", False]]
    assert out["private"] == "700\n"
    assert out["renamed"] == "leaf"
    assert out["removed"] is False
    assert out["missing"][1] == "not_found"
    assert out["conflict"][1] == "conflict"
    assert out["roundtrip"] is True
    assert out["owner"] == "user\n"


def test_published_cli_files(published_python: Path, qbox_for_compat: QboxUp, tmp_path: Path) -> None:
    cli = str(published_python.parent / "qbox")
    env = published_env(qbox_for_compat, XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([cli, *args], env=env, input=stdin, capture_output=True, timeout=120,
                              cwd=str(tmp_path))

    created = run("sandboxes", "create", "tpl_python", "--timeout", "120")
    assert created.returncode == 0, created.stderr
    sb = created.stdout.decode().strip()
    try:
        local = tmp_path / "in.txt"
        local.write_bytes(b"line one\nline two\n")
        assert run("sandboxes", "files", "cp", str(local), f"{sb}:/home/user/in.txt").returncode == 0
        cat = run("sandboxes", "files", "cat", f"{sb}:/home/user/in.txt")
        assert cat.returncode == 0 and cat.stdout == b"line one\nline two\n"
        assert run("sandboxes", "files", "write", f"{sb}:/tmp/piped", stdin=b"from stdin").returncode == 0
        back = tmp_path / "back.txt"
        assert run("sandboxes", "files", "cp", f"{sb}:/tmp/piped", str(back)).returncode == 0
        assert back.read_bytes() == b"from stdin"
        assert run("sandboxes", "files", "mkdir", f"{sb}:/home/user/d/e").returncode == 0
        listing = run("-o", "json", "sandboxes", "files", "ls", f"{sb}:/home/user")
        assert listing.returncode == 0, listing.stderr
        names = {e["name"] for e in json.loads(listing.stdout)}
        assert {"in.txt", "d"} <= names
        stat = run("-o", "json", "sandboxes", "files", "stat", f"{sb}:/home/user/in.txt")
        assert stat.returncode == 0 and json.loads(stat.stdout)["size"] == 18
        assert run("sandboxes", "files", "rm", f"{sb}:/home/user/d").returncode != 0  # not empty
        assert run("sandboxes", "files", "rm", f"{sb}:/home/user/d", "-r").returncode == 0
        missing = run("sandboxes", "files", "cat", f"{sb}:/home/user/nope")
        assert missing.returncode == 4, missing.stderr
    finally:
        run("sandboxes", "kill", sb, "-y")
