"""`qbox doctor` and `qbox version` (ours, the installed console script) against a real `qbox up`:
crun, the built-in template, a registry the builds are pushed to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qbox._version import __version__
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration

QBOX = Path(sys.executable).parent / "qbox"


def ours(up: QboxUp, config_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QBOX_API_KEY": up.api_key, "QBOX_BASE_URL": up.base_url,
           "XDG_CONFIG_HOME": str(config_home)}
    return subprocess.run([str(QBOX), *args], env=env, capture_output=True, text=True, timeout=200, cwd="/")


def test_doctor_passes_every_check_and_leaves_no_sandbox(qbox: QboxUp, api: httpx.Client, tmp_path: Path) -> None:
    done = ours(qbox, tmp_path, "-o", "json", "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    found = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True and all(c["ok"] for c in found.values()), found
    assert list(found) == ["control plane reachable", "control plane version", "api key recognized",
                           "hosts registered", "a host accepting sandboxes", "a template is ready",
                           "host agents reachable", "runtime", "registry", "test sandbox spawn",
                           "test code execution", "test sandbox kill"]
    assert found["control plane version"]["detail"] == __version__
    assert found["runtime"]["detail"].startswith("crun")
    assert "pushed" in found["registry"]["detail"]  # the session's QBOX_REGISTRY
    assert found["test code execution"]["detail"] == "1+1 = 2"
    sandbox_id = found["test sandbox spawn"]["detail"].split()[0]
    ended = api.get(f"/v1/sandboxes/{sandbox_id}")
    assert ended.status_code == 200 and ended.json()["status"] not in ("running", "starting"), ended.text

    table = ours(qbox, tmp_path, "-o", "table", "doctor", "--quick")
    assert table.returncode == 0 and table.stdout.rstrip().endswith("all checks passed."), table.stdout
    assert "  - test sandbox spawn  (skipped)" in table.stdout
    version = ours(qbox, tmp_path, "-o", "table", "version")
    assert f"server {__version__} at {qbox.base_url}" in version.stdout, version.stdout
    assert not (tmp_path / "qbox").exists()


def test_doctor_fails_with_a_revoked_key(qbox: QboxUp, tmp_path: Path) -> None:
    env_key = "qbox_" + "0" * 40
    done = subprocess.run([str(QBOX), "-o", "table", "doctor"], capture_output=True, text=True, timeout=60, cwd="/",
                          env={**os.environ, "QBOX_API_KEY": env_key, "QBOX_BASE_URL": qbox.base_url,
                               "XDG_CONFIG_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "  ✓ control plane reachable" in done.stdout and "  ✗ api key recognized" in done.stdout
    assert done.stdout.rstrip().endswith("1 check(s) failed.")
