"""Environment variables against a real `qbox up` (crun): a change reaches the next command, a
shell opened after it and code (a kernel already running, a context started after); the
template's value shows under the sandbox's own, and everything survives a restart."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.shell_term import Term
from tests.integration.test_code_e2e import execute
from tests.integration.test_templates_e2e import built
from tests.qbox_process import QboxUp, kill_all_sandboxes, leftovers, scrub, start, stop
from tests.registry import BUSYBOX_REPO

pytestmark = pytest.mark.integration


def env_of(api: httpx.Client, sandbox_id: str) -> dict[str, str]:
    """What a command started now sees."""
    r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "env"})
    assert r.status_code == 200, r.text
    return dict(line.split("=", 1) for line in r.json()["stdout"].splitlines() if "=" in line)


def listed(api: httpx.Client, sandbox_id: str, **params: Any) -> dict[str, dict[str, Any]]:
    r = api.get(f"/v1/sandboxes/{sandbox_id}/envs", params=params)
    assert r.status_code == 200, r.text
    return {e["key"]: e for e in r.json()["envs"]}


def printed(api: httpx.Client, sandbox: dict[str, Any], code: str, **body: Any) -> str:
    r = execute(api, sandbox, code=code, **body)
    assert r.status_code == 200 and r.json().get("error") is None, r.text
    return "".join(o["text"] for o in r.json()["outputs"] if o["stream"] == "stdout")


def test_changes_reach_new_commands_and_shells(qbox: QboxUp, api: httpx.Client,
                                               sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    before = env_of(api, sid)
    assert before["QBOX_SANDBOX_ID"] == sid and before["QBOX_TEMPLATE_ID"] == "tpl_python"
    r = api.patch(f"/v1/sandboxes/{sid}/envs",
                  json={"envs": {"GREETING": "hello world", "DB_PASSWORD": "s3cr3t"}})
    assert r.status_code == 200, r.text
    seen = env_of(api, sid)
    assert seen["GREETING"] == "hello world" and seen["DB_PASSWORD"] == "s3cr3t"
    assert "PATH" in seen and seen["HOME"] == "/home/user"  # the image's and the user's stay
    assert listed(api, sid, mask="true")["DB_PASSWORD"]["value"] == "********"
    with Term.open(qbox.base_url, sid, qbox.api_key) as term:
        assert term.run('echo "[$GREETING]"') == "[hello world]"
    api.request("DELETE", f"/v1/sandboxes/{sid}/envs", json={"keys": ["GREETING"]})
    assert "GREETING" not in env_of(api, sid)
    r = api.post(f"/v1/sandboxes/{sid}/envs/upload",
                 content=b'export MULTI="a\\nb"\nQUOTED=\'$HOME stays\'\n')
    assert r.json()["applied"] == ["MULTI", "QUOTED"], r.text
    seen = env_of(api, sid)
    assert seen["QUOTED"] == "$HOME stays"
    out = api.post(f"/v1/sandboxes/{sid}/exec",
                   json={"cmd": "sh", "args": ["-c", 'printf %s "$MULTI"']}).json()
    assert out["stdout"] == "a\nb"


def test_code_sees_envs_set_while_its_kernel_runs(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    code = "import os; print(os.environ.get('LATE'))"
    assert printed(api, sandbox, code) == "None\n"  # the kernel runs before the change
    assert api.patch(f"/v1/sandboxes/{sid}/envs", json={"envs": {"LATE": "1"}}).status_code == 200
    assert printed(api, sandbox, code) == "1\n"
    r = api.post(f"/v1/sandboxes/{sid}/code-contexts", json={"language": "python"}, timeout=120)
    assert r.status_code in (200, 201), r.text
    assert printed(api, sandbox, code, contextId=r.json()["id"]) == "1\n"
    assert printed(api, sandbox, "echo $LATE", language="bash") == "1\n"
    api.patch(f"/v1/sandboxes/{sid}/envs", json={"envs": {"LATE": "2"}})
    assert printed(api, sandbox, code) == "2\n"


def test_the_sandbox_wins_over_its_template(api: httpx.Client, registry: str) -> None:
    image = f"{registry}/{BUSYBOX_REPO}"
    with built(api, "envs-precedence", image,
               env={"SHARED": "from-template", "TPL_ONLY": "t"}) as template:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": template["id"], "envs": {"SHARED": "from-spawn"}})
        assert r.status_code == 201 and r.json()["status"] == "running", r.text
        sid = r.json()["id"]
        try:
            envs = listed(api, sid)
            assert (envs["SHARED"]["value"], envs["SHARED"]["source"]) == ("from-spawn", "user")
            assert (envs["TPL_ONLY"]["value"], envs["TPL_ONLY"]["source"]) == ("t", "template")
            assert env_of(api, sid)["SHARED"] == "from-spawn"
            # Without the sandbox's own value the template's shows again.
            api.put(f"/v1/sandboxes/{sid}/envs", json={"envs": {}})
            assert listed(api, sid)["SHARED"]["source"] == "template"
            seen = env_of(api, sid)
            assert (seen["SHARED"], seen["TPL_ONLY"]) == ("from-template", "t")
            r = api.patch(f"/v1/sandboxes/{sid}/envs", json={"envs": {"QBOX_TEMPLATE_ID": "x"}})
            assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
        finally:
            api.delete(f"/v1/sandboxes/{sid}")


def test_envs_survive_a_restart() -> None:
    base = Path(tempfile.mkdtemp(prefix="qbox-envs-restart-"))
    data_dir = base / "data"
    up = start(data_dir)
    try:
        with up.client() as api:
            sb = api.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python",
                                                           "timeoutSeconds": 0}).json()
            assert sb["status"] == "running", sb
            r = api.patch(f"/v1/sandboxes/{sb['id']}/envs",
                          json={"envs": {"KEPT": "across restarts", "API_KEY": "k"},
                                "secret": ["KEPT"]})
            assert r.status_code == 200, r.text
        assert stop(up) == 0, up.log()[-3000:]
        up = start(data_dir, port=up.port)
        with up.client() as api:
            deadline = time.monotonic() + 30
            while api.get(f"/v1/sandboxes/{sb['id']}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            masked = listed(api, sb["id"], mask="true")
            assert masked["KEPT"]["value"] == masked["API_KEY"]["value"] == "********"
            assert listed(api, sb["id"])["KEPT"]["value"] == "across restarts"
            assert env_of(api, sb["id"])["KEPT"] == "across restarts"  # the agent kept them too
            api.patch(f"/v1/sandboxes/{sb['id']}/envs", json={"envs": {"AFTER": "1"}})
            assert env_of(api, sb["id"])["AFTER"] == "1"
        assert "across restarts" not in up.log()
    finally:
        kill_all_sandboxes(up)
        stop(up)
        leaked = leftovers(data_dir)
        scrub(data_dir)
        shutil.rmtree(base, ignore_errors=True)
    assert leaked == []
