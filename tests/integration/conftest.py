from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.qbox_process import QboxUp, running_qbox


@pytest.fixture(scope="session")
def qbox() -> Iterator[QboxUp]:
    """One real `qbox up` (crun, the built-in template) shared by the integration tests."""
    base = Path(tempfile.mkdtemp(prefix="qbox-it-"))
    try:
        with running_qbox(base / "data") as up:
            yield up
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def api(qbox: QboxUp) -> Iterator[httpx.Client]:
    with qbox.client() as client:
        yield client


@pytest.fixture
def sandbox(api: httpx.Client) -> Iterator[dict]:  # type: ignore[type-arg]
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python"})
    assert r.status_code == 201, r.text
    sb = r.json()
    assert sb["status"] == "running", sb
    try:
        yield sb
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")
