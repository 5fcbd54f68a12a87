"""``sandbox.envs`` of the SDK against the real app (fake agent underneath, its commands real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbox import Sandbox, SandboxNotFoundError, ValidationError
from qbox.sdk._transport import Connection
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_envs_api import env_in_sandbox
from tests.unit.server.test_quotas_sdk import config
from tests.unit.server.test_sandboxes_api import spawn


def test_the_sdk_sets_lists_and_removes_envs(harness: Harness, tmp_path: Path) -> None:
    sb = spawn(harness, {"envs": {"FROM_SPAWN": "s"}})
    sandbox = Sandbox.connect(sb["id"], config=config(harness))
    sandbox.envs.set({"A": "1"}, API_TOKEN="t", secret=["A"])
    assert sandbox.envs.get("A") == "1" and sandbox.envs.get("MISSING") is None
    masked = sandbox.envs.get_all(mask=True)
    assert masked["A"] == masked["API_TOKEN"] == "********" and masked["FROM_SPAWN"] == "s"
    assert {e.key: e.source for e in sandbox.envs.list()}["QBOX_SANDBOX_ID"] == "system"
    assert env_in_sandbox(harness, sb["id"])["API_TOKEN"] == "t"
    sandbox.envs.delete("A")
    assert "A" not in sandbox.envs.get_all()
    env_file = tmp_path / "app.env"
    env_file.write_text("# app\nexport B='two'\nnot a line\n")
    result = sandbox.envs.upload_dotenv(str(env_file))
    assert result.applied == ["B"] and result.skipped == 1
    assert [(r.line, r.key) for r in result.rejected] == [(3, None)]
    assert sandbox.envs.upload_dotenv("C=3\nD=4\n").applied == ["C", "D"]
    assert env_in_sandbox(harness, sb["id"])["D"] == "4"
    sandbox.envs.set_all({"ONLY": "o"})
    assert {e.key for e in sandbox.envs.list() if e.source == "user"} == {"ONLY"}
    sandbox.envs.clear()
    assert {e.source for e in sandbox.envs.list()} == {"system"}
    with pytest.raises(ValidationError) as caught:
        sandbox.envs.set({"QBOX_X": "1"})
    assert "envs.QBOX_X" in caught.value.field_errors


def test_another_members_sandbox_is_not_found(harness: Harness) -> None:
    sb = spawn(harness)
    _bob_id, bob = add_user_with_key(harness.settings.data_dir)
    admins = Sandbox.connect(sb["id"], config=config(harness))
    # Bob cannot connect (404 too): his handle on the same sandbox, made by hand.
    bobs = Sandbox(admins.info, Connection.open(config(harness, bob), None, None, None))
    for call in (bobs.envs.list, lambda: bobs.envs.set({"A": "1"}), bobs.envs.clear,
                 lambda: bobs.envs.delete("A"), lambda: bobs.envs.upload_dotenv("A=1\n")):
        with pytest.raises(SandboxNotFoundError):
            call()
