"""The published client on a template with a warm pool: ``Sandbox.create`` claims the pooled
sandbox and ``run_code`` answers, with no change to the client."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox import Sandbox, Template, TemplateInfo
from tests.compat.conftest import run_published_script
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

TEMPLATE = "tpl_python"
SCRIPT = textwrap.dedent('''
    import json
    from qbox import Sandbox

    sb = Sandbox.create("tpl_python", timeout=120)
    try:
        out = {"id": sb.sandbox_id, "sum": sb.run_code("1+1").text}
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def _pool(up: QboxUp) -> TemplateInfo:
    return Template.get(TEMPLATE, api_key=up.api_key, base_url=up.base_url)


def _until(up: QboxUp, ready: int, *, timeout: float = 180) -> TemplateInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = _pool(up)
        if info.warm_pool.ready == ready and info.warm_pool.booting == 0:
            return info
        assert time.monotonic() < deadline, f"the pool never got to {ready} ready: {info.warm_pool}"
        time.sleep(1)


@pytest.fixture
def pool_of_one(qbox_for_compat: QboxUp) -> Iterator[QboxUp]:
    """tpl_python with a warm pool of one, set through our SDK; back to none (and empty) after."""
    up = qbox_for_compat
    Template.set_warm_pool(TEMPLATE, 1, eager=True, api_key=up.api_key, base_url=up.base_url)
    try:
        _until(up, 1)
        yield up
    finally:
        Template.set_warm_pool(TEMPLATE, 0, api_key=up.api_key, base_url=up.base_url)
        _until(up, 0)


def test_published_client_claims_a_pooled_sandbox_and_runs_code(
        published_python: Path, pool_of_one: QboxUp) -> None:
    out = run_published_script(published_python, pool_of_one, SCRIPT)
    assert out["sum"] == "2"
    # It was the pooled one, as our own SDK reads it back (a killed sandbox stays listed).
    info = Sandbox.get_info(out["id"], api_key=pool_of_one.api_key, base_url=pool_of_one.base_url)
    assert info.from_pool is True
