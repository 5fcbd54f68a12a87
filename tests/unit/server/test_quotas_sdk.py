"""The SDK's quota methods against the real app (fake agent underneath): what an admin sets is what
spawns meet, and a refusal is the SDK's QuotaExceededError with the server's details."""

from __future__ import annotations

import httpx
import pytest

from qbox import ConnectionConfig, QuotaExceededError, QuotaValues, Sandbox, Users, ValidationError
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key


def config(h: Harness, key: str | None = None) -> ConnectionConfig:
    # The SDK's requests go through the app in-process.
    transport = httpx.MockTransport(lambda request: h.client.send(request))
    return ConnectionConfig(api_key=key or h.admin_key, base_url="http://testserver", max_retries=0,
                            transport=transport)


def test_an_admin_sets_quotas_and_a_member_meets_them(harness: Harness) -> None:
    admin = config(harness)
    user_id, key = add_user_with_key(harness.settings.data_dir)
    defaults = Users.set_quota_defaults(sandboxes=4, vcpus=8, config=admin)
    assert defaults.limits.sandboxes == 4 and defaults.stored.vcpus == 8 and defaults.stored.shells is None
    info = Users.set_quota(user_id, sandboxes=1, memory_mb=2048, config=admin)
    assert info.limits == QuotaValues(sandboxes=1, vcpus=8, memory_mb=2048,
                                      disk_mb=harness.settings.quota_disk_mb,
                                      commands=harness.settings.quota_commands,
                                      shells=harness.settings.quota_shells)
    assert info.overrides == QuotaValues(sandboxes=1, memory_mb=2048) and not info.exempt
    member = config(harness, key)
    sandbox = Sandbox.create("python", config=member)
    try:
        with pytest.raises(QuotaExceededError) as refused:
            Sandbox.create("python", config=member)
        assert refused.value.details == {"quota": "sandboxes", "limit": 1, "used": 1, "requested": 1}
        mine = Users.quota(config=member)
        assert mine.user_id == user_id and mine.usage.sandboxes == 1 and mine.usage.vcpus == 1
    finally:
        sandbox.kill()
    back = Users.set_quota(user_id, reset=["sandboxes"], config=admin)
    assert back.overrides.sandboxes is None and back.limits.sandboxes == 4
    assert Users.quota(user_id, config=admin).overrides.memory_mb == 2048
    assert Users.quota_defaults(config=admin).limits.vcpus == 8
    assert Users.set_quota_defaults(reset=["vcpus"], config=admin).limits.vcpus == harness.settings.quota_vcpus


def test_bad_arguments_fail_before_or_at_the_server(harness: Harness) -> None:
    admin = config(harness)
    with pytest.raises(ValueError, match="unknown quota"):
        Users.set_quota("usr_x", reset=["cpus"], config=admin)
    with pytest.raises(ValueError, match="both set and reset"):
        Users.set_quota_defaults(vcpus=2, reset=["vcpus"], config=admin)
    with pytest.raises(TypeError):
        Users.set_quota_defaults(reset="vcpus", config=admin)
    with pytest.raises(ValidationError):
        Users.set_quota_defaults(vcpus=-1, config=admin)
