"""Spawn, exec, commands and kill against a real `qbox up` with crun."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def exec_(api: httpx.Client, sb: dict, cmd: str, *args: str, **extra: object) -> dict:  # type: ignore[type-arg]
    r = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": cmd, "args": list(args), **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_spawn_without_wait_then_running(api: httpx.Client) -> None:
    r = api.post("/v1/sandboxes", json={"templateId": "tpl_python", "timeoutSeconds": 120})
    assert r.status_code == 201
    sb = r.json()
    assert sb["status"] in ("booting", "running")
    try:
        got = wait_until(lambda: api.get(f"/v1/sandboxes/{sb['id']}").json()["status"] == "running")
        assert got, api.get(f"/v1/sandboxes/{sb['id']}/logs").json()
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_exec_runs_as_the_sandbox_user(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    out = exec_(api, sandbox, "sh", "-c", "id -u; id -g; echo $HOME; pwd; whoami")
    assert out["exitCode"] == 0, out
    assert out["stdout"].split() == ["1000", "1000", "/home/user", "/home/user", "user"]
    root = exec_(api, sandbox, "id", "-u", user="root")
    assert root["stdout"] == "0\n"


def test_exec_python_outputs_and_exit_codes(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    out = exec_(api, sandbox, "python3", "-c",
                "import sys; print(1+1); print('oops', file=sys.stderr); sys.exit(7)")
    assert out == {"stdout": "2\n", "stderr": "oops\n", "exitCode": 7, "timedOut": False}
    out = exec_(api, sandbox, "cat", stdin="from stdin")
    assert out["stdout"] == "from stdin"
    out = exec_(api, sandbox, "pwd", cwd="/tmp")
    assert out["stdout"] == "/tmp\n"
    out = exec_(api, sandbox, "sh", "-c", "echo $GREETING", env={"GREETING": "hello"})
    assert out["stdout"] == "hello\n"


def test_exec_missing_binary_is_an_error_not_a_500(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    r = api.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": "/no/such/binary"})
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        assert r.json()["exitCode"] != 0


def test_exec_timeout_is_reported_not_hung(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    started = time.monotonic()
    out = exec_(api, sandbox, "sleep", "30", timeoutSeconds=1)
    assert out["timedOut"] is True
    assert time.monotonic() - started < 10
    # The sandbox is still usable afterwards.
    assert exec_(api, sandbox, "true")["exitCode"] == 0


def test_sandbox_is_isolated(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    script = "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'"
    out = exec_(api, sandbox, "sh", "-c", script)
    hostname, init, nprocs = out["stdout"].splitlines()
    assert hostname == sandbox["id"]
    assert "init" in init or "catatonit" in init
    assert int(nprocs) < 10  # only its own processes, not the host's


def test_background_command_status_logs_and_signal(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}/commands"
    r = api.post(base, json={"cmd": "/bin/sh", "args": ["-c", "echo started; exec sleep 300"]})
    assert r.status_code == 201, r.text
    pid = r.json()["pid"]
    assert r.json()["startedAt"].endswith("Z")
    assert wait_until(lambda: api.get(f"{base}/{pid}/logs").json()["stdout"] == "started\n")
    status = api.get(f"{base}/{pid}").json()
    assert status["alive"] is True and status["exitCode"] == 0 and status["signal"] == 0
    assert pid in [p["pid"] for p in api.get(base).json()]
    assert api.delete(f"{base}/{pid}", params={"signal": 9}).status_code == 204
    status = wait_until(lambda: (s := api.get(f"{base}/{pid}").json())["alive"] is False and s)
    assert status["signal"] == 9 and status["exitCode"] == 128 + 9
    # An exited process stays queryable, and killing it again is fine.
    assert api.get(f"{base}/{pid}/logs").json()["stdout"] == "started\n"
    assert api.delete(f"{base}/{pid}", params={"signal": 15}).status_code == 204


def test_quick_command_is_queryable_after_exit(api: httpx.Client, sandbox: dict) -> None:  # type: ignore[type-arg]
    base = f"/v1/sandboxes/{sandbox['id']}/commands"
    pid = api.post(base, json={"cmd": "/bin/sh", "args": ["-c", "echo out; echo err >&2; exit 4"]}).json()["pid"]
    status = wait_until(lambda: (s := api.get(f"{base}/{pid}").json())["alive"] is False and s)
    assert status["exitCode"] == 4 and status["signal"] == 0
    assert api.get(f"{base}/{pid}/logs").json() == {"stdout": "out\n", "stderr": "err\n"}


def test_delete_then_operations_are_409(api: httpx.Client) -> None:
    sb = api.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python"}).json()
    assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 204
    got = api.get(f"/v1/sandboxes/{sb['id']}").json()
    assert got["status"] == "killed"
    r = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active"
    assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 409


def test_auto_kill_after_timeout(api: httpx.Client) -> None:
    sb = api.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python", "timeoutSeconds": 2}).json()
    assert sb["status"] == "running"
    ended = wait_until(lambda: (s := api.get(f"/v1/sandboxes/{sb['id']}").json())["status"] != "running" and s,
                       timeout=15, interval=0.25)
    assert ended and ended["status"] == "terminated", ended
    assert ended["endReason"].startswith("timeout")
    logs = api.get(f"/v1/sandboxes/{sb['id']}/logs").json()
    assert logs[-1]["message"].startswith("timeout")
