from __future__ import annotations

import pytest

from tests.unit.sdk.fakes import FakeServer


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QBOX_API_KEY", "QBOX_BASE_URL", "TOKEN", "QBOX", "QBOX_REQUEST_TIMEOUT", "QBOX_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
