"""The API reference's curl examples, run with curl against a real server.

The reference's examples name `tpl_python312` and `sb_7a3f`; qbox's built-in
template is `tpl_python`, and the sandbox id is the one spawn returned. The
commands are otherwise exactly the reference's (including `-d` without a
Content-Type, which curl sends as a form type).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration


def _sh(script: str, qbox: QboxUp) -> str:
    env = {**os.environ, "QBOX": qbox.base_url, "TOKEN": qbox.api_key}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_curl_examples(qbox: QboxUp) -> None:
    listing = json.loads(_sh('curl -sS -H "Authorization: Bearer $TOKEN" "$QBOX/v1/sandboxes"', qbox))
    assert isinstance(listing, list)

    spawned = json.loads(_sh('''curl -sS -X POST "$QBOX/v1/sandboxes" \\
-H "Authorization: Bearer $TOKEN" \\
-d '{"templateId":"tpl_python"}' ''', qbox))
    assert spawned["id"].startswith("sb_") and spawned["status"] in ("booting", "running")
    sandbox_id = spawned["id"]
    try:
        import time

        for _ in range(200):
            status = json.loads(_sh(f'curl -sS -H "Authorization: Bearer $TOKEN" '
                                    f'"$QBOX/v1/sandboxes/{sandbox_id}"', qbox))["status"]
            if status != "booting":
                break
            time.sleep(0.05)
        assert status == "running"
        result = json.loads(_sh(f'''curl -X POST "$QBOX/v1/sandboxes/{sandbox_id}/exec" \\
-H "Authorization: Bearer $TOKEN" \\
-d '{{"cmd":"python","args":["-c","print(1+1)"]}}' ''', qbox))
        assert result["stdout"] == "2\n" and result["stderr"] == "" and result["exitCode"] == 0
    finally:
        _sh(f'curl -sS -X DELETE -H "Authorization: Bearer $TOKEN" "$QBOX/v1/sandboxes/{sandbox_id}"',
            qbox)
    assert json.loads(_sh('curl -sS "$QBOX/healthz"', qbox)) == {"status": "ok"}
