"""The published client (`qbox-sh==1.4.1`) in its own virtual environment: its import name
`qbox` clashes with ours, so it never shares a venv with this project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
        with running_qbox(base / "data") as up:
            yield up
    finally:
        shutil.rmtree(base, ignore_errors=True)
