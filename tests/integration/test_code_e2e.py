"""The code interpreter against a real `qbox up`: the built-in template's kernels, through the
control plane and the agent, unary and SSE (WIRE_PROTOCOL §4.5, §5.1)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def execute(api: httpx.Client, sb: dict, **body: Any) -> httpx.Response:  # type: ignore[type-arg]
    # The kernel may still be warming up right after boot: retried like the SDK does (transient).
    deadline = time.monotonic() + 60
    while True:
        r = api.post(f"/v1/sandboxes/{sb['id']}/code-execute", json=body, timeout=120)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines()
            if line.startswith("data: ")]


def test_doctor_execution_and_a_python_error(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    r = execute(api, sandbox, code="1+1", language="python")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("error") is None and body["timedOut"] is False
    assert base64.b64decode(body["result"]["text/plain"]) == b"2"
    assert body["contextId"].startswith("ctx_") and body["language"] == "python"
    r = execute(api, sandbox, code="import os\nprint(os.getuid())\n1/0")
    body = r.json()
    assert body["outputs"] == [{"stream": "stdout", "text": "1000\n"}]
    assert body["error"]["name"] == "ZeroDivisionError"


def test_a_streamed_execution_ends_with_complete(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    execute(api, sandbox, code="1")  # warm
    r = api.post(f"/v1/sandboxes/{sandbox['id']}/code-execute", timeout=120,
                 headers={"Accept": "text/event-stream"},
                 json={"code": "print('a')\nprint('b')\n7", "stream": True})
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    assert [e["kind"] for e in events][0] == "started"
    assert events[-1]["kind"] == "complete"
    text = "".join(e["output"]["text"] for e in events if e["kind"] == "output")
    assert text == "a\nb\n"
    [result] = [e["result"] for e in events if e["kind"] == "result"]
    assert base64.b64decode(result["text/plain"]) == b"7"


def test_contexts_and_languages(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}"
    r = api.get(f"{base}/code-languages")
    assert r.status_code == 200
    assert {lang["language"] for lang in r.json()["languages"]} >= {"python", "bash"}
    r = api.post(f"{base}/code-contexts", json={"language": "bash", "cwd": "/tmp"}, timeout=120)
    assert r.status_code in (200, 201), r.text
    context = r.json()
    body = execute(api, sandbox, code="pwd", contextId=context["id"]).json()
    assert body["outputs"] == [{"stream": "stdout", "text": "/tmp\n"}]
    ids = [c["id"] for c in api.get(f"{base}/code-contexts").json()["contexts"]]
    assert context["id"] in ids
    r = api.post(f"{base}/code-contexts/{context['id']}/restart", timeout=120)
    assert r.status_code == 200 and r.json()["id"] == context["id"]
    r = api.delete(f"{base}/code-contexts/{context['id']}")
    assert r.status_code in (200, 204)
    r = execute(api, sandbox, code="pwd", contextId=context["id"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "context_not_found"


def _b64text(data: dict[str, str]) -> str:
    return base64.b64decode(data["text/plain"]).decode()


def test_matplotlib_png_bash_env_and_identity(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    r = execute(api, sandbox, code="import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()")
    displays = [o["display"] for o in r.json()["outputs"] if "display" in o]
    assert displays and base64.b64decode(displays[0]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    r = execute(api, sandbox, code="import os\nos.getuid(), os.getcwd(), os.environ.get('GREETING')",
                env={"GREETING": "hi"})
    assert _b64text(r.json()["result"]) == "(1000, '/home/user', 'hi')"
    r = execute(api, sandbox, code="import os\nos.environ.get('GREETING')")  # env was for one call
    assert r.json()["result"] is None
    r = execute(api, sandbox, code="echo $((6 * 7)); echo oops >&2", language="bash")
    assert r.json()["outputs"][0] == {"stream": "stdout", "text": "42\n"}


def test_timeout_interrupts_and_kernel_death_is_reported(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    execute(api, sandbox, code="kept = 'still here'")
    started = time.monotonic()
    r = execute(api, sandbox, code="import time\ntime.sleep(60)", timeoutSeconds=2)
    assert time.monotonic() - started < 20
    assert r.json()["timedOut"] is True and r.json()["error"]["name"] == "KeyboardInterrupt"
    assert _b64text(execute(api, sandbox, code="kept").json()["result"]) == "'still here'"
    ctx = api.post(f"/v1/sandboxes/{sandbox['id']}/code-contexts", json={"language": "python"},
                   timeout=120).json()
    r = execute(api, sandbox, code="import os\nos._exit(3)", contextId=ctx["id"])
    assert r.status_code == 200 and r.json()["error"]["name"] == "KernelDied"
    again = execute(api, sandbox, code="1", contextId=ctx["id"])
    assert again.status_code == 409, again.text
    contexts = api.get(f"/v1/sandboxes/{sandbox['id']}/code-contexts").json()["contexts"]
    assert [c["state"] for c in contexts if c["id"] == ctx["id"]] == ["dead"]
    r = api.post(f"/v1/sandboxes/{sandbox['id']}/code-contexts/{ctx['id']}/restart", timeout=120)
    assert r.status_code == 200
    assert _b64text(execute(api, sandbox, code="2 + 2", contextId=ctx["id"]).json()["result"]) == "4"


def test_under_gvisor_too(api: httpx.Client) -> None:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python-gvisor"})
    assert r.status_code == 201, r.text
    sb = r.json()
    try:
        r = execute(api, sb, code="import numpy as np\nint(np.arange(10).sum())")
        assert r.status_code == 200, r.text
        assert _b64text(r.json()["result"]) == "45"
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")
