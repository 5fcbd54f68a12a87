from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from qbox.core.ids import new_sandbox_id
from tests.unit.agent.conftest import AgentUnderTest


async def _create(agent: AgentUnderTest, **extra: object) -> str:
    sandbox_id = new_sandbox_id()
    r = await agent.client.post("/sandboxes", json={
        "id": sandbox_id, "imageDigest": agent.digest, "envs": {"GREETING": "hi"},
        "vcpus": 1, "memoryMb": 256, **extra})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == sandbox_id and body["status"] == "running"
    assert body["bootedAt"].endswith("Z")
    return sandbox_id


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic s3cret-host-key"}])
async def test_requests_without_the_host_secret_are_401(agent: AgentUnderTest,
                                                        headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=agent.app),
                                 base_url="http://agent/internal/v1") as anonymous:
        r = await anonymous.get("/health", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["x-request-id"]


async def test_health(agent: AgentUnderTest) -> None:
    r = await agent.client.get("/health")
    assert r.status_code == 200
    assert r.json()["runtime"] == "fake" and r.json()["sandboxes"] == 0


async def test_images_import_and_lookup(agent: AgentUnderTest) -> None:
    r = await agent.client.post("/images", json={"ref": "oci:/srv/img:latest", "name": "img"})
    assert r.status_code == 200, r.text
    digest = r.json()["digest"]
    assert r.json()["sizeBytes"] == 1234
    assert r.json()["kernels"] == []
    r = await agent.client.get(f"/images/{digest}")
    assert r.json() == {"digest": digest, "sizeBytes": 1234, "unpacked": True, "kernels": []}
    # An image with a kernelspec offers it (the template then gets a code interpreter).
    spec_dir = agent.app.state.agent.images.rootfs_path(digest) / "usr/share/jupyter/kernels/python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        '{"argv": ["python3", "-m", "ipykernel_launcher"], "language": "python", '
        '"display_name": "Python 3"}')
    r = await agent.client.get(f"/images/{digest}")
    assert r.json()["kernels"] == [{"name": "python3", "language": "python",
                                    "displayName": "Python 3"}]
    r = await agent.client.get("/images/sha256:" + "0" * 64)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_sandbox_lifecycle(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    first = str(ipaddress.ip_network(agent.settings.network_pool)[2])  # slot 0's sandbox end
    assert (await agent.client.get("/sandboxes")).json() == [
        {"id": sandbox_id, "status": "running", "address": first}]
    assert (await agent.client.get(f"/sandboxes/{sandbox_id}")).json()["status"] == "running"
    assert (await agent.client.get("/health")).json()["sandboxes"] == 1
    assert (await agent.client.delete(f"/sandboxes/{sandbox_id}")).status_code == 204
    assert (await agent.client.get("/sandboxes")).json() == []
    assert not (agent.settings.sandboxes_dir / sandbox_id).exists()
    assert not (agent.settings.network_dir / sandbox_id).exists()
    # Idempotent.
    assert (await agent.client.delete(f"/sandboxes/{sandbox_id}")).status_code == 204


async def test_create_twice_conflicts_and_unknown_image_is_not_ready(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    r = await agent.client.post("/sandboxes", json={"id": sandbox_id, "imageDigest": agent.digest,
                                                    "vcpus": 1, "memoryMb": 256})
    assert r.status_code == 409
    r = await agent.client.post("/sandboxes", json={"id": new_sandbox_id(),
                                                    "imageDigest": "sha256:" + "1" * 64,
                                                    "vcpus": 1, "memoryMb": 256})
    assert r.status_code == 409 and r.json()["error"]["code"] == "template_not_ready"


async def test_bad_specs_are_validation_errors(agent: AgentUnderTest) -> None:
    for body in ({"id": "../etc", "imageDigest": agent.digest},
                 {"id": new_sandbox_id(), "imageDigest": agent.digest, "vcpus": 0},
                 {"id": new_sandbox_id(), "imageDigest": agent.digest, "hostname": "a b"}):
        r = await agent.client.post("/sandboxes", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == "validation_error"
    r = await agent.client.post("/sandboxes", content=b"{not json",
                                headers={"content-type": "application/json"})
    assert r.status_code == 400


async def test_unknown_sandbox_is_404_sandbox_not_found(agent: AgentUnderTest) -> None:
    for method, path in (("GET", "/sandboxes/sb_nothere01"),
                         ("POST", "/sandboxes/sb_nothere01/exec"),
                         ("GET", "/sandboxes/sb_nothere01/commands")):
        r = await agent.client.request(method, path, json={"cmd": "true"})
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "sandbox_not_found"


async def test_exec(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={
        "cmd": "sh", "args": ["-c", "echo $GREETING $EXTRA $HOME; echo oops >&2; exit 4"],
        "env": {"EXTRA": "there"}})
    assert r.json() == {"stdout": "hi there /home/user\n", "stderr": "oops\n", "exitCode": 4,
                        "timedOut": False}
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={
        "cmd": "cat", "stdin": "piped", "timeoutSeconds": 5})
    assert r.json()["stdout"] == "piped"
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={
        "cmd": "sleep", "args": ["30"], "timeoutSeconds": 0.2})
    assert r.json()["timedOut"] is True and r.json()["exitCode"] == 137


async def test_exec_of_a_missing_program_is_a_validation_error(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "no-such-program"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"


async def test_commands_flow(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/commands",
                                json={"cmd": "sh", "args": ["-c", "echo hello; exec sleep 30"]})
    assert r.status_code == 200
    pid = r.json()["pid"]
    assert r.json()["startedAt"].endswith("Z")
    status = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}")).json()
    assert status["alive"] is True and status["exitCode"] == 0 and status["signal"] == 0
    assert status["command"] == ["sh", "-c", "echo hello; exec sleep 30"]
    await asyncio.sleep(0.2)
    logs = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}/logs")).json()
    assert logs == {"stdout": "hello\n", "stderr": ""}
    listing = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands")).json()
    assert [c["pid"] for c in listing] == [pid]
    r = await agent.client.delete(f"/sandboxes/{sandbox_id}/commands/{pid}?signal=9")
    assert r.status_code == 204
    for _ in range(50):
        status = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}")).json()
        if not status["alive"]:
            break
        await asyncio.sleep(0.05)
    assert (status["alive"], status["signal"], status["exitCode"]) == (False, 9, 137)
    assert status["oomKilled"] is False  # a SIGKILL from the API, not the OOM killer
    assert status["endedAt"].endswith("Z")
    # Still there after exit, and killing it again is fine.
    r = await agent.client.delete(f"/sandboxes/{sandbox_id}/commands/{pid}")
    assert r.status_code == 204
    r = await agent.client.get(f"/sandboxes/{sandbox_id}/commands/123456")
    assert r.status_code == 404 and r.json()["error"]["code"] == "process_not_found"


async def test_stopped_sandbox_is_409_sandbox_not_active(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    await agent.runtime.kill(sandbox_id)
    await asyncio.sleep(0.05)
    body = (await agent.client.get(f"/sandboxes/{sandbox_id}")).json()
    assert body["status"] == "stopped" and "signal 9" in body["exitReason"]
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "sandbox_not_active"
    assert r.json()["error"]["details"]["currentState"] == "stopped"


async def test_internal_errors_have_no_traceback(agent: AgentUnderTest) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    agent.runtime.exec = broken  # type: ignore[method-assign]
    sandbox_id = await _create(agent)
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal"
    assert "secret internals" not in r.text


async def test_spec_user_workdir_and_pull_ref(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent, user="root", workdir="/")
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec",
                                json={"cmd": "sh", "args": ["-c", "echo $HOME"]})
    assert r.json()["stdout"] == "/root\n"
    params = agent.app.state.agent.sandboxes.get(sandbox_id).params
    assert (params.user, params.workdir) == ("root", "/")

    ref = "oci:/images/built:1"
    pulled = agent.store.add(ref)  # what the fake store names an import of ``ref``
    agent.store.root.joinpath(pulled[7:]).rename(agent.store.root / "moved-away")
    r = await agent.client.post("/sandboxes", json={"id": new_sandbox_id(),
                                                    "imageDigest": pulled,
                                                    "imagePullRef": ref})
    assert r.status_code == 201, r.text
    assert agent.store.imported == [(ref, "pull-" + pulled[7:19])]
