"""A restarted agent finds its sandboxes again (crun's state and the mounts survive it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.agent.conftest import DIGEST, client_for, start_agent

pytestmark = pytest.mark.integration


async def test_sandboxes_survive_an_agent_restart(data_dir: Path, test_rootfs: Path) -> None:
    app, _ = await start_agent(data_dir, test_rootfs)
    async with app.router.lifespan_context(app), client_for(app) as client:
        r = await client.post("/sandboxes", json={"id": "sb_restart0001", "imageDigest": DIGEST,
                                                  "vcpus": 1, "memoryMb": 256,
                                                  "envs": {"KEPT": "yes"}})
        assert r.status_code == 201, r.text
        address = r.json()["address"]
        await client.post("/sandboxes/sb_restart0001/exec",
                          json={"cmd": "sh", "args": ["-c", "echo before > /tmp/mark"]})

    app, _ = await start_agent(data_dir, test_rootfs)
    async with app.router.lifespan_context(app), client_for(app) as client:
        # The same address: its namespace and firewall elements were kept.
        assert (await client.get("/sandboxes")).json() == [
            {"id": "sb_restart0001", "status": "running", "address": address}]
        r = await client.post("/sandboxes/sb_restart0001/exec",
                              json={"cmd": "sh", "args": ["-c", "cat /tmp/mark; echo $KEPT"]})
        assert r.json()["stdout"] == "before\nyes\n"
        assert (await client.delete("/sandboxes/sb_restart0001")).status_code == 204
        assert (await client.get("/sandboxes")).json() == []
