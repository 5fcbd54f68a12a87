from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.qbox_process import QboxUp, running_qbox
from tests.registry import registry_with_busybox

@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """A real OCI registry on 127.0.0.1 for the session ("127.0.0.1:PORT"), holding the
    busybox test image as tests.registry.BUSYBOX_REPO."""
    with registry_with_busybox() as address:
        yield address


@pytest.fixture(scope="session")
def import_dir() -> Iterator[Path]:
    """Where tests put the image files (oci:, oci-archive:) templates are built from: the
    session qbox's ``QBOX_IMPORT_DIRS``."""
    path = Path(tempfile.mkdtemp(prefix="qbox-it-imports-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def qbox(registry: str, import_dir: Path) -> Iterator[QboxUp]:
    """One real `qbox up` (crun, the built-in template) shared by the integration tests.

    It pushes every template build to the session registry (``QBOX_REGISTRY``, which is
    trusted, loopback as it is), as a deployment with several hosts does; admins import
    image files from ``import_dir``; and a deleted template's image goes within seconds (a
    short ``QBOX_IMAGE_GC_GRACE_SECONDS``), so tests can see it go. Templates from git may be
    fetched over http from loopback (``QBOX_GIT_ALLOW_INSECURE``: tests/git_server.py).
    """
    base = Path(tempfile.mkdtemp(prefix="qbox-it-"))
    try:
        with running_qbox(base / "data", env={"QBOX_REGISTRY": f"{registry}/qbox",
                                              "QBOX_IMPORT_DIRS": str(import_dir),
                                              "QBOX_IMAGE_GC_GRACE_SECONDS": "5",
                                              "QBOX_GIT_ALLOW_INSECURE": "1"}) as up:
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
