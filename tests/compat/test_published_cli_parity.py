"""The published CLI beside ours on one config file and one server: `auth login` by either is read by
the other, `auth status`, `doctor --no-spawn` and `version` (WIRE_PROTOCOL.md §8)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qbox._version import __version__
from tests.compat.conftest import published_env
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

OURS = Path(sys.executable).parent / "qbox"


def without_env(up: QboxUp, config_home: Path) -> dict[str, str]:
    """No key or URL in the environment: only the config file under ``config_home`` speaks."""
    env = published_env(up, XDG_CONFIG_HOME=str(config_home))
    for name in ("QBOX_API_KEY", "QBOX_BASE_URL", "QBOX_PROFILE"):
        env.pop(name, None)
    return env


def run(program: Path, env: dict[str, str], *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(program), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def test_a_login_by_either_cli_is_used_by_the_other(published_python: Path, qbox_for_compat: QboxUp,
                                                     tmp_path: Path) -> None:
    up = qbox_for_compat
    published = published_python.parent / "qbox"
    env = without_env(up, tmp_path)
    login = run(published, env, "auth", "login", "--base-url", up.base_url, "--api-key", "-", "-p", "theirs",
                stdin=up.api_key + "\n")
    assert login.returncode == 0, login.stdout + login.stderr
    assert up.api_key not in login.stdout + login.stderr
    path = tmp_path / "qbox" / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    status = run(OURS, env, "-o", "json", "auth", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["profile"] == "theirs" and json.loads(status.stdout)["baseUrl"] == up.base_url

    ours = run(OURS, env, "auth", "login", "--api-key", "-", "-p", "ours", "--base-url", up.base_url,
               stdin=up.api_key)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = yaml.safe_load(path.read_text())
    assert document["active_profile"] == "ours" and set(document["profiles"]) == {"theirs", "ours"}
    theirs = run(published, env, "-o", "json", "auth", "status")
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    seen = json.loads(theirs.stdout)
    assert (seen["profile"], seen["status"], seen["base_url"]) == ("ours", "ok", up.base_url)
    listed = run(published, env, "-o", "json", "auth", "profiles", "list")
    assert {p["profile"]: p["active"] for p in json.loads(listed.stdout)} == {"theirs": False, "ours": True}

    assert run(published, env, "auth", "profiles", "use", "theirs").returncode == 0
    assert json.loads(run(OURS, env, "-o", "json", "auth", "status").stdout)["profile"] == "theirs"
    path.chmod(0o644)  # both refuse a file other users may read, with the same exit code
    for program in (published, OURS):
        refused = run(program, env, "auth", "status")
        assert refused.returncode == 2, (program, refused.stdout + refused.stderr)


def test_published_auth_status_doctor_and_version(published_python: Path, qbox_for_compat: QboxUp,
                                                   tmp_path: Path) -> None:
    up = qbox_for_compat
    published = published_python.parent / "qbox"
    env = published_env(up, XDG_CONFIG_HOME=str(tmp_path))
    status = run(published, env, "-o", "json", "auth", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["status"] == "ok"
    bad = run(published, {**env, "QBOX_API_KEY": "qbox_" + "0" * 40}, "auth", "status")
    assert bad.returncode == 3
    doctor = run(published, env, "doctor", "--no-spawn")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for check in ("control plane reachable", "control plane version", "api key recognized", "hosts registered",
                  "a host accepting sandboxes", "a template is ready"):
        assert f"✓ {check}" in doctor.stdout, (check, doctor.stdout)
    assert "✗" not in doctor.stdout and "test sandbox kill" not in doctor.stdout
    version = run(published, env, "-o", "json", "version")
    assert version.returncode == 0, version.stdout + version.stderr
    assert json.loads(version.stdout)["platform_version"] == __version__
    assert json.loads(run(OURS, env, "-o", "json", "version").stdout)["serverVersion"] == __version__
    nowhere = {**env, "QBOX_BASE_URL": "http://127.0.0.1:9"}  # the discard port: nothing listens
    for program, error_field in ((published, "platform_error"), (OURS, "serverError")):
        unreachable = run(program, {**nowhere, "QBOX_MAX_RETRIES": "0"}, "-o", "json", "version")
        assert unreachable.returncode == 0, (program, unreachable.stdout + unreachable.stderr)
        assert json.loads(unreachable.stdout)[error_field], program
    assert not (tmp_path / "qbox").exists()  # nothing above writes a config file
