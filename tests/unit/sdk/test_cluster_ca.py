"""System.cluster_ca and its async twin against the real control plane: the CA certificate
the database holds and its fingerprint; a member's key is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox import AsyncSystem, ClusterCa, PermissionDeniedError, System
from qbox.core.cert_fingerprint import fingerprint
from tests.unit.sdk.test_hosts import async_config, config
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)


async def test_both_twins_read_the_cluster_ca(harness: Harness) -> None:
    served = harness.client.get("/v1/agent/ca").json()
    blocking = System.cluster_ca(config=config(harness))
    awaited = await AsyncSystem.cluster_ca(config=async_config(harness))
    assert isinstance(blocking, ClusterCa) and blocking == awaited
    assert (blocking.certificate_pem, blocking.fingerprint) == (served["certificatePem"], served["fingerprint"])
    assert blocking.fingerprint == fingerprint(blocking.certificate_pem)


def test_a_member_is_refused(harness: Harness) -> None:
    _, key = add_user_with_key(harness.settings.data_dir)
    with pytest.raises(PermissionDeniedError):
        System.cluster_ca(config=config(harness, key))
