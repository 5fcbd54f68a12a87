from tests.unit.server.conftest import Harness


def test_spawn_exec_kill(harness: Harness) -> None:
    c = harness.client
    r = c.post("/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": "tpl_python"},
               headers=harness.auth())
    assert r.status_code == 201, r.text
    sb = r.json()
    assert sb["status"] == "running"
    r = c.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "echo", "args": ["hi"]},
               headers=harness.auth())
    assert r.json()["stdout"] == "hi\n"
    r = c.delete(f"/v1/sandboxes/{sb['id']}", headers=harness.auth())
    assert r.status_code == 204
