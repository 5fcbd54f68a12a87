"""``POST /sandboxes/{id}/claim`` on the fake runtime: what it checks, what it changes and
saves, and that a kernel host spawned before it hands the new envs to its kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbox.agent import sandboxes as sandboxes_module
from qbox.agent.sandbox import Sandbox
from tests.unit.agent.interpreter_fixtures import CodeAgent, make_code_agent_fixture, text_of

code_agent = make_code_agent_fixture()


def host_spawns(agent: CodeAgent, sandbox_id: str) -> list[dict[str, str]]:
    return [spec.env for cid, spec in agent.runtime.execs
            if cid == sandbox_id and spec.args[-1].endswith("fake_kernel_host.py")]


async def claim(agent: CodeAgent, sandbox_id: str, **body: object) -> dict[str, object]:
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                json={"envs": {}, "vcpus": 1, "memoryMb": 256, **body})
    assert r.status_code == 200, r.text
    answer: dict[str, object] = r.json()
    return answer


async def test_a_claim_replaces_envs_limits_and_deadline_and_saves_them(
        code_agent: CodeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[str, str, int]] = []

    def recorder(kind: str) -> object:
        def write(cgroup: str, value: int) -> list[Path]:
            written.append((kind, cgroup, value))
            return [Path("/fake") / kind]
        return write

    monkeypatch.setattr(sandboxes_module.cgroups, "set_memory_limit", recorder("memory"))
    monkeypatch.setattr(sandboxes_module.cgroups, "set_cpu_limit", recorder("cpu"))
    sandbox_id = await code_agent.create(envs={"A": "boot", "OLD": "x"})
    answer = await claim(code_agent, sandbox_id, envs={"A": "claimed"}, memoryMb=128,
                         deadlineAt="2099-01-02T03:04:05.000000Z")
    assert answer["id"] == sandbox_id and answer["status"] == "running"
    sandbox = code_agent.manager.get(sandbox_id)
    saved = Sandbox.load(sandbox.directory)
    assert saved.params.envs == {"A": "claimed"}
    assert (saved.params.vcpus, saved.params.memory_mb) == (1, 128)
    assert saved.deadline_at is not None and saved.deadline_at.year == 2099
    # Only the limit that shrank is written (vcpus stayed at the boot's 1).
    assert [(kind, value) for kind, _, value in written] == [("memory", 128)]
    assert written[0][1].endswith(f"/{sandbox_id}")
    await code_agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
    [*_, (cid, command)] = code_agent.runtime.execs
    assert cid == sandbox_id
    assert command.env["A"] == "claimed" and "OLD" not in command.env


async def test_a_claim_only_shrinks(code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()  # 1 vCPU, 256 MiB
    for body, field in (({"vcpus": 2}, "vcpus"), ({"memoryMb": 512}, "memoryMb")):
        r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                         json={"vcpus": 1, "memoryMb": 256, **body})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_error" and field in error["details"]["fieldErrors"]
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                     json={"vcpus": 1, "memoryMb": 64, "envs": {"A=B": "y"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/claim", json={"vcpus": 1})
    assert r.status_code == 400  # memoryMb is required
    assert Sandbox.load(code_agent.manager.get(sandbox_id).directory).params.memory_mb == 256


async def test_claiming_an_unknown_or_stopped_sandbox(code_agent: CodeAgent) -> None:
    r = await code_agent.client.post("/sandboxes/sb_nosuchsandbox/claim",
                                     json={"vcpus": 1, "memoryMb": 64})
    assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found"
    sandbox_id = await code_agent.create()
    await code_agent.manager.stop(sandbox_id, "test")
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                     json={"vcpus": 1, "memoryMb": 64})
    assert r.status_code == 409, r.text


async def test_a_limit_the_cgroup_refuses_is_a_conflict(
        code_agent: CodeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_id = await code_agent.create()

    def busy(cgroup: str, memory_mb: int) -> list[object]:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(sandboxes_module.cgroups, "set_memory_limit", busy)
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                     json={"vcpus": 1, "memoryMb": 64, "envs": {"A": "b"}})
    assert r.status_code == 409 and "busy" in r.json()["error"]["message"]
    assert code_agent.manager.get(sandbox_id).params.envs == {}  # nothing changed


async def test_a_limit_with_no_cgroup_to_hold_it_is_refused(code_agent: CodeAgent) -> None:
    # The fake runtime makes no cgroup: a claim that would lower a limit must not pretend it did.
    sandbox_id = await code_agent.create(envs={"A": "boot"})
    r = await code_agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                     json={"vcpus": 1, "memoryMb": 64, "envs": {"A": "b"}})
    assert r.status_code == 409 and "no memory cgroup" in r.json()["error"]["message"], r.text
    assert code_agent.manager.get(sandbox_id).params.envs == {"A": "boot"}  # nothing changed
    # Limits that stay as they booted need no cgroup.
    await claim(code_agent, sandbox_id, envs={"A": "b"})
    assert code_agent.manager.get(sandbox_id).params.envs == {"A": "b"}


async def test_a_kernel_host_from_before_the_claim_gets_the_envs_per_request(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(envs={"A": "boot"})
    await code_agent.events(sandbox_id, code="print warm")  # the host starts before the claim
    assert text_of(await code_agent.events(sandbox_id, code="env A")) == "<unset>\n"
    await claim(code_agent, sandbox_id, envs={"A": "claimed", "B": "new", "1X": "odd"})
    assert text_of(await code_agent.events(sandbox_id, code="env A")) == "claimed\n"
    # The request's own env still wins over the sandbox's.
    assert text_of(await code_agent.events(sandbox_id, code="env A",
                                           env={"A": "mine"})) == "mine\n"
    assert [env.get("A") for env in host_spawns(code_agent, sandbox_id)] == ["boot"]


async def test_a_kernel_host_spawned_after_the_claim_has_the_envs_itself(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create(envs={"A": "boot"})
    await claim(code_agent, sandbox_id, envs={"A": "claimed"})
    assert text_of(await code_agent.events(sandbox_id, code="env A")) == "<unset>\n"
    assert [env.get("A") for env in host_spawns(code_agent, sandbox_id)] == ["claimed"]


def test_a_state_file_without_code_interpreter_reads_as_lazy(tmp_path: object) -> None:
    data = {"id": "sb_aaaaaaaa", "imageDigest": "sha256:" + "a" * 64, "vcpus": 1,
            "memoryMb": 64, "createdAt": "2026-01-01T00:00:00.000000Z", "status": "running"}
    assert Sandbox.from_json(data, tmp_path).params.code_interpreter == "lazy"  # type: ignore[arg-type]
    data["codeInterpreter"] = "eager"
    sandbox = Sandbox.from_json(data, tmp_path)  # type: ignore[arg-type]
    assert sandbox.params.code_interpreter == "eager"
    assert json.loads(json.dumps(sandbox.to_json()))["codeInterpreter"] == "eager"
