"""Users' quota methods (async here; sync against the real app in tests/unit/server/test_quotas_sdk.py):
request shapes and parsing."""

from __future__ import annotations

from typing import Any

import pytest

from qbox import AsyncUsers, QboxError, QuotaDefaults, QuotaValues
from tests.unit.sdk.fakes import FakeServer, reply


def quota(**extra: Any) -> dict[str, Any]:
    limits = {"sandboxes": 10, "vcpus": 16, "memoryMb": 32768, "diskMb": 102400, "commands": 32, "shells": 8}
    return {"userId": "usr_2", "exempt": False, "limits": limits,
            "overrides": dict.fromkeys(limits), "usage": dict.fromkeys(limits, 0), **extra}


async def test_async_quota_calls(server: FakeServer) -> None:
    server.on("GET", "/v1/quota", reply(200, quota()))
    server.on("GET", "/v1/users/usr_2/quota", reply(200, quota()))
    server.on("PUT", "/v1/users/usr_2/quota", reply(200, quota(overrides={"vcpus": 4})))
    server.on("GET", "/v1/quota-defaults", reply(200, {"limits": quota()["limits"], "stored": {}}))
    server.on("PUT", "/v1/quota-defaults", reply(200, {"limits": quota()["limits"], "stored": {"shells": 2}}))
    config = server.config()
    assert (await AsyncUsers.quota(config=config)).limits.memory_mb == 32768
    assert (await AsyncUsers.quota("usr_2", config=config)).usage == QuotaValues(0, 0, 0, 0, 0, 0)
    info = await AsyncUsers.set_quota("usr_2", vcpus=4, disk_mb=0, reset=["shells", "memory_mb"], config=config)
    assert server.last("PUT", "/v1/users/usr_2/quota").body == {"vcpus": 4, "diskMb": 0, "shells": None,
                                                                "memoryMb": None}
    assert info.overrides == QuotaValues(vcpus=4)
    defaults = await AsyncUsers.quota_defaults(config=config)
    assert isinstance(defaults, QuotaDefaults) and defaults.stored == QuotaValues()
    assert (await AsyncUsers.set_quota_defaults(shells=2, config=config)).stored.shells == 2
    assert server.last("PUT", "/v1/quota-defaults").body == {"shells": 2}


async def test_a_malformed_quota_is_a_bad_response(server: FakeServer) -> None:
    server.on("GET", "/v1/quota", reply(200, quota(limits={"vcpus": "many"})))
    with pytest.raises(QboxError) as caught:
        await AsyncUsers.quota(config=server.config())
    assert caught.value.code == "bad_response"
