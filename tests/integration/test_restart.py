"""`qbox up` restarts on the same data dir: keys, templates and live sandboxes are found again."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.qbox_process import kill_all_sandboxes, leftovers, scrub, start, stop

pytestmark = pytest.mark.integration


def test_restart_finds_sandboxes_and_reconciles() -> None:
    base = Path(tempfile.mkdtemp(prefix="qbox-restart-"))
    data_dir = base / "data"
    up = start(data_dir)
    try:
        key = up.api_key
        with up.client() as api:
            kept = api.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python",
                                                             "timeoutSeconds": 0}).json()
            lost = api.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python",
                                                             "timeoutSeconds": 0}).json()
            assert kept["status"] == lost["status"] == "running"
            api.post(f"/v1/sandboxes/{kept['id']}/exec",
                     json={"cmd": "sh", "args": ["-c", "echo persisted > /home/user/note"]})
        assert stop(up) == 0, up.log()[-3000:]
        assert "admin API key" in up.log()  # printed once, at first start

        # While qbox is down one sandbox dies.
        runtime = next(p.name for p in (data_dir / "runtime").iterdir() if p.name in ("crun", "runc"))
        subprocess.run([runtime, "--root", str(data_dir / "runtime" / runtime), "kill", lost["id"], "KILL"],
                       check=True)
        time.sleep(0.3)

        up = start(data_dir, port=up.port)
        assert up.api_key == key
        assert up.log().count("admin API key") == 1  # not printed again
        with up.client() as api:
            templates = api.get("/v1/templates").json()
            assert "tpl_python" in [t["id"] for t in templates if t["status"] == "ready"]
            got = api.get(f"/v1/sandboxes/{kept['id']}").json()
            assert got["status"] == "running"
            out = api.post(f"/v1/sandboxes/{kept['id']}/exec",
                           json={"cmd": "cat", "args": ["/home/user/note"]}).json()
            assert out["stdout"] == "persisted\n"
            got = api.get(f"/v1/sandboxes/{lost['id']}").json()
            assert got["status"] == "failed" and "lost" in got["endReason"], got
            logs = api.get(f"/v1/sandboxes/{lost['id']}/logs").json()
            assert "lost" in logs[-1]["message"]
    finally:
        kill_all_sandboxes(up)
        stop(up)
        leaked = leftovers(data_dir)
        scrub(data_dir)
        shutil.rmtree(base, ignore_errors=True)
    assert leaked == []
