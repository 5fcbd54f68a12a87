"""A real `qbox up` for the escape and abuse suite, and helpers to attack it.

The suite runs against every runtime the host offers (crun always; runsc when
it is installed), through the same API a user has.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.qbox_process import QboxUp, running_qbox
from tests.security.files_harness import HostCanary

RUNTIME_TEMPLATES = {"crun": "tpl_python", "runsc": "tpl_python-gvisor"}


@pytest.fixture(scope="session")
def qbox_sec() -> Iterator[QboxUp]:
    base = Path(tempfile.mkdtemp(prefix="qbox-sec-"))
    try:
        with running_qbox(base / "data") as up:
            yield up
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _runtimes() -> list[str]:
    return ["crun", "runsc"] if shutil.which("runsc") else ["crun"]


@pytest.fixture(scope="session", params=_runtimes())
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Box:
    """One sandbox under attack."""

    def __init__(self, api: httpx.Client, info: dict[str, Any], up: QboxUp) -> None:
        self.api, self.info, self.up = api, info, up

    @property
    def id(self) -> str:
        return str(self.info["id"])

    def sh(self, script: str, *, user: str | None = None, timeout: float = 30) -> dict[str, Any]:
        body: dict[str, Any] = {"cmd": "/bin/sh", "args": ["-c", script], "timeoutSeconds": timeout}
        if user:
            body["user"] = user
        r = self.api.post(f"/v1/sandboxes/{self.id}/exec", json=body, timeout=timeout + 30)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def py(self, code: str, *, user: str | None = None, timeout: float = 30) -> dict[str, Any]:
        body: dict[str, Any] = {"cmd": "python3", "args": ["-c", code], "timeoutSeconds": timeout}
        if user:
            body["user"] = user
        r = self.api.post(f"/v1/sandboxes/{self.id}/exec", json=body, timeout=timeout + 30)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def host_pid(self) -> int:
        """The sandbox init's pid on the host, from the runtime's own state."""
        runtime_root = self.up.data_dir / "runtime" / self.info.get("runtime", "crun")
        state = subprocess.run([self.info.get("runtime", "crun"), "--root", str(runtime_root), "state", self.id],
                               capture_output=True, text=True, check=True)
        return int(json.loads(state.stdout)["pid"])


@pytest.fixture
def make_box(qbox_sec: QboxUp, runtime: str) -> Iterator[Any]:
    boxes: list[Box] = []
    api = qbox_sec.client()

    def make(**body: Any) -> Box:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": RUNTIME_TEMPLATES[runtime], "timeoutSeconds": 600, **body})
        assert r.status_code == 201, r.text
        info = r.json()
        assert info["status"] == "running", info
        box = Box(api, info, qbox_sec)
        boxes.append(box)
        return box

    try:
        yield make
    finally:
        for box in boxes:
            api.delete(f"/v1/sandboxes/{box.id}")
        api.close()


@pytest.fixture
def host_canary() -> Iterator[HostCanary]:
    """A host directory with a secret, outside every sandbox, watched with inotify."""
    canary = HostCanary()
    try:
        yield canary
    finally:
        canary.close()
