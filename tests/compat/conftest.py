"""The published client (`qbox-sh==1.4.1`) in its own virtual environment: its import name
`qbox` clashes with ours, so it never shares a venv with this project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.qbox_process import QboxUp, running_qbox

# With its `shell` extra (websockets), which `sandbox.shell()` and `qbox sandboxes ssh` need.
PUBLISHED = "qbox-sh[shell]==1.4.1"
VENV = Path(os.environ.get("QBOX_COMPAT_VENV", Path(__file__).resolve().parents[2] / ".venv-compat"))


@pytest.fixture(scope="session")
def published_python() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if not marker.exists() or marker.read_text() != PUBLISHED:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PUBLISHED], check=True)
        marker.write_text(PUBLISHED)
    return python


@pytest.fixture(scope="session")
def qbox_for_compat() -> Iterator[QboxUp]:
    base = Path(tempfile.mkdtemp(prefix="qbox-compat-"))
    try:
        # The tests' registries listen on 127.0.0.1 (any port): trusted, though loopback; so do
        # their git repositories (tests/git_server.py), fetched over http.
        with running_qbox(base / "data", env={"QBOX_TRUSTED_REGISTRIES": "127.0.0.1",
                                              "QBOX_GIT_ALLOW_INSECURE": "1"}) as up:
            yield up
    finally:
        shutil.rmtree(base, ignore_errors=True)


def published_env(up: QboxUp, **extra: str) -> dict[str, str]:
    """The environment the published client finds its server and key in."""
    return {**os.environ, "QBOX_API_KEY": up.api_key, "QBOX_BASE_URL": up.base_url, **extra}


def run_published_cli(python: Path, up: QboxUp, *args: str, key: str | None = None,
                      timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The published CLI against ``up``, with none of this host's own CLI config."""
    env = published_env(up, QBOX_API_KEY=key or up.api_key, XDG_CONFIG_HOME="/nonexistent-qbox-config",
                        QBOX_ASSUME_YES="1")
    return subprocess.run([str(python.parent / "qbox"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def run_published_script(python: Path, up: QboxUp, script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` with the published client against ``up``; the JSON object it printed last."""
    done = subprocess.run([str(python), "-c", script, *args], env=published_env(up),
                          capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-4000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out
