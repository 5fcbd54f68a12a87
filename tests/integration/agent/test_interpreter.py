"""The code interpreter's way into a real sandbox (crun and gVisor): the guest directory's
read-only mount, and the kernel host started in the sandbox as its user.

The test rootfs has python3 but no Jupyter: a kernelspec written into the
sandbox turns the interpreter on, and the real kernel host then fails on its
``import jupyter_client`` — which must come back as a 503 whose message
carries the host's own error, proving it ran in there.
(Real kernels end to end need the built-in image: tests/integration.)
"""

from __future__ import annotations

import json

import pytest

from tests.integration.agent.conftest import Agent

pytestmark = pytest.mark.integration

RUNTIMES = ["crun", "runsc"]  # runsc missing fails (make setup installs it), as elsewhere


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_the_guest_directory_is_mounted_read_only(agent: Agent, runtime: str) -> None:
    sandbox_id = await agent.create(runtime=runtime)
    read = await agent.exec(sandbox_id, "python3", "-c",
                            "print(open('/.qbox/guest/kernel_host.py').readline().strip())")
    assert read["exitCode"] == 0, read
    assert read["stdout"].startswith('"""')
    write = await agent.exec(sandbox_id, "sh", "-c", "echo x > /.qbox/guest/planted",
                             user="root")
    assert write["exitCode"] != 0 and "Read-only" in write["stderr"]


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_the_kernel_host_starts_in_the_sandbox(agent: Agent,
                                                    runtime: str) -> None:
    sandbox_id = await agent.create(runtime=runtime)
    base = f"/sandboxes/{sandbox_id}/code"
    r = await agent.client.post(f"{base}/execute", json={"code": "1"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "code_interpreter_disabled"
    spec = {"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python"}
    r = await agent.client.put(
        f"/sandboxes/{sandbox_id}/files/content",
        params={"path": "/usr/local/share/jupyter/kernels/python3/kernel.json",
                "user": "root"}, content=json.dumps(spec).encode())
    assert r.status_code == 200, r.text
    r = await agent.client.get(f"{base}/languages")
    assert r.status_code == 200 and r.json()["languages"][0]["language"] == "python"
    r = await agent.client.post(f"{base}/execute", json={"code": "1"})
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "code_interpreter_unavailable"
    assert "jupyter_client" in error["message"]
    processes = await agent.exec(sandbox_id, "ps", "-eo", "user:12,args")
    assert "kernel_host" not in processes["stdout"]  # it exited; nothing left behind
