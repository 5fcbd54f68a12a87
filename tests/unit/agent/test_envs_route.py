"""``PUT /sandboxes/{id}/envs`` on the fake runtime: the whole env of later commands and code
executions, saved with the sandbox's state; refused for unknown, stopped and bad input."""

from __future__ import annotations

from qbox.agent.sandbox import Sandbox
from tests.unit.agent.interpreter_fixtures import CodeAgent, make_code_agent_fixture, text_of

code_agent = make_code_agent_fixture()


async def put_envs(agent: CodeAgent, sandbox_id: str, envs: dict[str, str]) -> int:
    r = await agent.client.put(f"/sandboxes/{sandbox_id}/envs", json={"envs": envs})
    return r.status_code


async def test_new_envs_reach_later_commands_and_are_saved(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(envs={"A": "boot", "OLD": "x"})
    assert await put_envs(code_agent, sandbox_id, {"A": "new", "B": "two words"}) == 204
    saved = Sandbox.load(code_agent.manager.get(sandbox_id).directory)
    assert saved.params.envs == {"A": "new", "B": "two words"}
    await code_agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
    [*_, (cid, command)] = code_agent.runtime.execs
    assert cid == sandbox_id
    assert command.env["A"] == "new" and command.env["B"] == "two words"
    assert "OLD" not in command.env
    # The call's own env still wins.
    await code_agent.client.post(f"/sandboxes/{sandbox_id}/exec",
                                 json={"cmd": "true", "env": {"A": "call"}})
    assert code_agent.runtime.execs[-1][1].env["A"] == "call"


async def test_a_running_kernel_host_gets_the_envs_with_each_request(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(envs={"A": "boot"})
    await code_agent.events(sandbox_id, code="print warm")  # the host starts first
    assert await put_envs(code_agent, sandbox_id, {"A": "set", "B": "b"}) == 204
    assert text_of(await code_agent.events(sandbox_id, code="env A")) == "set\n"
    assert text_of(await code_agent.events(sandbox_id, code="env B")) == "b\n"
    assert await put_envs(code_agent, sandbox_id, {"A": "again"}) == 204
    assert text_of(await code_agent.events(sandbox_id, code="env A")) == "again\n"


async def test_refusals(code_agent: CodeAgent) -> None:
    r = await code_agent.client.put("/sandboxes/sb_nosuchsandbox/envs", json={"envs": {}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found"
    sandbox_id = await code_agent.create(envs={"A": "boot"})
    for bad in ({"A=B": "x"}, {"A": "x\0y"}, {"": "x"}):
        r = await code_agent.client.put(f"/sandboxes/{sandbox_id}/envs", json={"envs": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", bad
    r = await code_agent.client.put(f"/sandboxes/{sandbox_id}/envs", json={})
    assert r.status_code == 400  # envs is required
    assert code_agent.manager.get(sandbox_id).params.envs == {"A": "boot"}
    await code_agent.manager.stop(sandbox_id, "test")
    assert await put_envs(code_agent, sandbox_id, {"A": "late"}) == 409
