"""The published client's `sandbox.ports` and `qbox sandboxes create -p` / `sandboxes ports …`
against our server: the bodies it sends pass, the answers it reads are what it expects, and the
URLs it prints reach a server in the sandbox through the preview proxy."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compat.conftest import published_env, run_published_script
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

SCRIPT = textwrap.dedent('''
    import json, sys
    import qbox
    from qbox import Sandbox
    from qbox.ports import PortSpec

    out = {}
    spawn_ports = [PortSpec(8080), PortSpec(9000, visibility="signed_url", ttl=600)]
    sb = Sandbox.create("tpl_python", timeout=120, ports=spawn_ports)
    try:
        out["sandbox"] = sb.sandbox_id
        sb.commands.run("cd /tmp && echo hi > index.html && exec python3 -m http.server 8000", background=True)
        out["url"] = sb.ports.expose_and_wait(8000, timeout=30)
        ports = sb.ports.list()
        out["listed"] = [[p.port, p.visibility, p.host_header_mode, bool(p.url)] for p in ports]
        out["signed_at_spawn"] = [p.signed_url is not None for p in ports if p.port == 9000]
        first = sb.ports.get(9000).signed_url
        out["minted"] = sb.ports.mint_signed_url(9000, ttl=60)
        out["minted_differs"] = out["minted"] != first
        out["minted_default"] = sb.ports.mint_signed_url(9000) != out["minted"]
        out["updated"] = sb.ports.update(8080, visibility="private", allowed_users=["a@b.io"]).allowed_users
        out["probe_8080"] = sb.ports.probe(8080)
        sb.ports.unexpose(8080)
        try:
            sb.ports.get(8080)
            out["gone"] = None
        except qbox.QboxError as exc:
            out["gone"] = type(exc).__name__
        try:
            sb.ports.expose(80)
            out["reserved"] = None
        except qbox.QboxError as exc:
            out["reserved"] = type(exc).__name__
        try:
            sb.ports.expose(8000)
            out["again"] = None
        except qbox.QboxError as exc:
            out["again"] = type(exc).__name__
        try:
            sb.ports.expose_and_wait(8001, timeout=1.2)
            out["unreachable"] = None
        except qbox.QboxError as exc:
            out["unreachable"] = type(exc).__name__
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def test_published_client_ports(published_python: Path, qbox_for_compat: QboxUp) -> None:
    up = qbox_for_compat
    out = run_published_script(published_python, up, SCRIPT)
    sid = out["sandbox"]
    assert out["url"] == f"http://8000-{sid}.localhost:{up.port}/"
    assert out["listed"] == [[8000, "public", "rewrite", True], [8080, "public", "rewrite", True],
                             [9000, "signed_url", "rewrite", True]]
    assert out["signed_at_spawn"] == [True]
    assert out["minted"].startswith(f"http://9000-{sid}.localhost:{up.port}/?qbox_signature=")
    assert out["minted_differs"] is True and out["minted_default"] is True
    assert out["updated"] == ["a@b.io"] and out["probe_8080"] is False
    assert out["gone"] == "PortNotFoundError"
    assert out["reserved"] == "PortReservedError"
    assert out["again"] == "PortAlreadyExposedError"
    assert out["unreachable"] == "PortNotReachableError"


def test_published_cli_ports(published_python: Path, qbox_for_compat: QboxUp, tmp_path: Path) -> None:
    up = qbox_for_compat
    cli = str(published_python.parent / "qbox")
    env = published_env(up, XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=180, cwd=str(tmp_path))

    created = run("sandboxes", "create", "tpl_python", "--timeout", "120", "-p", "8000", "-p", "80")
    assert created.returncode == 0, created.stderr
    sb = created.stdout.strip()
    try:
        def listed() -> list[dict[str, Any]]:
            done = run("-o", "json", "sandboxes", "ports", "list", sb)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)  # type: ignore[no-any-return]

        assert [(p["port"], p["visibility"]) for p in listed()] == [(80, "public"), (8000, "public")]
        exposed = run("sandboxes", "ports", "expose", sb, "3000")
        assert exposed.returncode == 0, exposed.stderr
        assert exposed.stdout.strip() == f"http://3000-{sb}.localhost:{up.port}/"
        assert run("sandboxes", "ports", "expose", sb, "3000").returncode == 6  # already exposed: conflict
        assert run("sandboxes", "ports", "expose", sb, "443").returncode == 7  # privileged without --force
        assert run("sandboxes", "ports", "expose", sb, "443", "--force").returncode == 0
        updated = run("-o", "json", "sandboxes", "ports", "update", sb, "3000", "--visibility", "private")
        assert updated.returncode == 0, updated.stderr
        assert json.loads(updated.stdout)["visibility"] == "private"
        assert run("sandboxes", "ports", "unexpose", sb, "3000").returncode == 0
        assert run("sandboxes", "ports", "unexpose", sb, "3000").returncode == 4
        assert sorted(p["port"] for p in listed()) == [80, 443, 8000]
        # The URL `create -p 8000` set up reaches a server started afterwards (through our API:
        # the published CLI cannot start a background command).
        with up.client() as api:
            started = api.post(f"/v1/sandboxes/{sb}/commands", json={
                "cmd": "sh", "args": ["-c", "cd /tmp && echo hello > index.html && exec python3 -m http.server 8000"]})
            assert started.status_code == 201, started.text
            deadline = time.monotonic() + 30
            while not api.post(f"/v1/sandboxes/{sb}/ports/8000/probe").json()["reachable"]:
                assert time.monotonic() < deadline, "http.server never listened"
                time.sleep(0.2)
        with httpx.Client(base_url=up.base_url, timeout=30) as visitor:
            page = visitor.get("/", headers={"Host": f"8000-{sb}.localhost:{up.port}"})
        assert page.status_code == 200 and page.text == "hello\n"
    finally:
        run("-y", "sandboxes", "kill", sb)
