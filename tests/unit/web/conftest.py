"""The dashboard's pages over the real control plane and a real agent (SQLite).

``web_admin`` and ``web_member`` are browsers in miniature: each its own
cookie jar, signed in through the login form, sending changes as our own
pages do (same Origin, the CSRF token). ``stranger`` is a second member for
the attacks every ``{id}`` page must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.server.conftest import Harness, make_harness
from tests.unit.web.helpers import WebClient, sign_in


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)


@pytest.fixture
def web_admin(harness: Harness) -> WebClient:
    return sign_in(harness, "boss@example.com", role="admin")


@pytest.fixture
def web_member(harness: Harness) -> WebClient:
    return sign_in(harness, "alice@example.com")


@pytest.fixture
def stranger(harness: Harness) -> WebClient:
    return sign_in(harness, "mallory@example.com")
