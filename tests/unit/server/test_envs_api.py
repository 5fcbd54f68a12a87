"""/v1/sandboxes/{id}/envs on SQLite and PostgreSQL, over the real agent (fake runtime: its
commands really run): sources, masking, every change reaching a new command, the caps and
refusals, another member's 404s, and values kept out of the audit log."""

from __future__ import annotations

from typing import Any

import httpx

from qbox.server.services.envs import MASK, MAX_USER_ENV_BYTES, MAX_USER_ENVS
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn


def envs_of(h: Harness, sandbox_id: str, key: str | None = None,
            mask: bool = False) -> dict[str, dict[str, Any]]:
    r = h.client.get(f"/v1/sandboxes/{sandbox_id}/envs", params={"mask": "true"} if mask else None,
                     headers=h.auth(key))
    assert r.status_code == 200, r.text
    listed = r.json()["envs"]
    assert [e["key"] for e in listed] == sorted(e["key"] for e in listed)
    return {e["key"]: e for e in listed}


def env_in_sandbox(h: Harness, sandbox_id: str, key: str | None = None) -> dict[str, str]:
    """What a new command in the sandbox sees."""
    r = h.client.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "env"}, headers=h.auth(key))
    assert r.status_code == 200, r.text
    return dict(line.split("=", 1) for line in r.json()["stdout"].splitlines() if "=" in line)


def change(h: Harness, method: str, sandbox_id: str, body: dict[str, Any] | None,
           key: str | None = None) -> httpx.Response:
    return h.client.request(method, f"/v1/sandboxes/{sandbox_id}/envs", json=body,
                            headers=h.auth(key))


def test_sources_and_the_platforms_envs(harness: Harness) -> None:
    sb = spawn(harness, {"envs": {"FOO": "bar"}})
    listed = envs_of(harness, sb["id"])
    assert listed["FOO"] == {"key": "FOO", "value": "bar", "source": "user", "secret": False}
    assert listed["QBOX_SANDBOX_ID"]["value"] == sb["id"]
    assert listed["QBOX_SANDBOX_ID"]["source"] == "system"
    assert listed["QBOX_TEMPLATE_ID"] == {"key": "QBOX_TEMPLATE_ID", "value": "tpl_python",
                                          "source": "system", "secret": False}
    seen = env_in_sandbox(harness, sb["id"])
    assert seen["FOO"] == "bar" and seen["QBOX_SANDBOX_ID"] == sb["id"]
    assert seen["QBOX_TEMPLATE_ID"] == "tpl_python"


def test_patch_put_delete_reach_new_commands(harness: Harness) -> None:
    sb = spawn(harness, {"envs": {"FOO": "bar"}})
    r = change(harness, "PATCH", sb["id"], {"envs": {"A": "1", "B": "two words\nand a line"}})
    assert r.status_code == 200, r.text
    assert {e["key"] for e in r.json()["envs"]} >= {"A", "B", "FOO"}
    seen = env_in_sandbox(harness, sb["id"])
    assert (seen["A"], seen["FOO"]) == ("1", "bar")
    # PUT replaces all of the user's envs.
    assert change(harness, "PUT", sb["id"], {"envs": {"C": "3"}}).status_code == 200
    listed = envs_of(harness, sb["id"])
    assert "A" not in listed and "FOO" not in listed and listed["C"]["value"] == "3"
    seen = env_in_sandbox(harness, sb["id"])
    assert "A" not in seen and "FOO" not in seen and seen["C"] == "3"
    assert "QBOX_SANDBOX_ID" in seen  # the platform's stay
    # DELETE with a JSON body; unknown keys are fine.
    assert change(harness, "DELETE", sb["id"], {"keys": ["C", "NEVER_SET"]}).status_code == 200
    assert "C" not in env_in_sandbox(harness, sb["id"])
    # PUT {} clears.
    change(harness, "PATCH", sb["id"], {"envs": {"D": "4"}})
    assert change(harness, "PUT", sb["id"], {"envs": {}}).status_code == 200
    assert {e["source"] for e in envs_of(harness, sb["id"]).values()} == {"system"}


def test_masking_by_flag_and_by_name(harness: Harness) -> None:
    sb = spawn(harness)
    r = change(harness, "PATCH", sb["id"], {"envs": {"PLAIN": "p", "MARKED": "m",
                                                    "GITHUB_TOKEN": "t", "DB_PASSWORD": "pw",
                                                    "API_KEY": "k", "KEYBOARD": "kb"},
                                            "secret": ["MARKED"]})
    assert r.status_code == 200, r.text
    assert MASK in r.text and '"t"' not in r.text  # the answer is masked
    masked = envs_of(harness, sb["id"], mask=True)
    assert {k for k, e in masked.items() if e["value"] == MASK} == {
        "MARKED", "GITHUB_TOKEN", "DB_PASSWORD", "API_KEY"}
    assert masked["PLAIN"]["value"] == "p" and masked["KEYBOARD"]["value"] == "kb"
    assert masked["QBOX_SANDBOX_ID"]["value"] == sb["id"]
    assert envs_of(harness, sb["id"])["MARKED"] == {"key": "MARKED", "value": "m",
                                                    "source": "user", "secret": True}
    # Set again without the flag, a secret stays one; PUT decides afresh.
    change(harness, "PATCH", sb["id"], {"envs": {"MARKED": "m2"}})
    assert envs_of(harness, sb["id"], mask=True)["MARKED"]["value"] == MASK
    change(harness, "PUT", sb["id"], {"envs": {"MARKED": "m3", "OTHER": "o"}, "secret": True})
    masked = envs_of(harness, sb["id"], mask=True)
    assert masked["MARKED"]["value"] == MASK and masked["OTHER"]["value"] == MASK
    change(harness, "PUT", sb["id"], {"envs": {"MARKED": "m4"}})
    assert envs_of(harness, sb["id"], mask=True)["MARKED"]["value"] == "m4"


def test_refusals(harness: Harness) -> None:
    sb = spawn(harness, {"envs": {"KEEP": "k"}})
    for body, field in (({"envs": {"QBOX_MINE": "x"}}, "envs.QBOX_MINE"),
                        ({"envs": {"qbox_lower": "x"}}, "envs.qbox_lower"),
                        ({"envs": {"1BAD": "x"}}, "envs.1BAD"),
                        ({"envs": {"A-B": "x"}}, "envs.A-B"),
                        ({"envs": {"NUL": "a\u0000b"}}, "envs.NUL"),
                        ({"envs": {"A": "1"}, "secret": ["B"]}, "secret")):
        for method in ("PATCH", "PUT"):
            r = change(harness, method, sb["id"], body)
            assert r.status_code == 400, (body, r.text)
            error = r.json()["error"]
            assert error["code"] == "validation_error" and field in error["details"]["fieldErrors"]
            assert "a\u0000b" not in r.text
    for bad in ({"envs": {"A": 1}}, {"envs": []}, {"env": {}}, {"envs": {}, "extra": 1}, None):
        assert change(harness, "PATCH", sb["id"], bad).status_code == 400, bad
    assert change(harness, "DELETE", sb["id"], None).status_code == 400
    assert change(harness, "DELETE", sb["id"], {"keys": "A"}).status_code == 400
    many = {f"K{i}": "v" for i in range(MAX_USER_ENVS + 1)}
    r = change(harness, "PUT", sb["id"], {"envs": many})
    assert r.status_code == 400 and "at most" in r.json()["error"]["details"]["fieldErrors"]["envs"]
    big = {f"K{i}": "v" * (MAX_USER_ENV_BYTES // 4) for i in range(5)}
    r = harness.client.put(f"/v1/sandboxes/{sb['id']}/envs", json={"envs": big},
                           headers=harness.auth())
    assert r.status_code in (400, 413), r.text
    # Nothing of the refused changes stuck.
    listed = envs_of(harness, sb["id"])
    assert {k for k, e in listed.items() if e["source"] == "user"} == {"KEEP"}


def test_a_sandbox_that_is_not_running(harness: Harness) -> None:
    sb = spawn(harness, {"envs": {"KEEP": "k"}})
    assert harness.client.delete(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).status_code < 300
    for method, body in (("PATCH", {"envs": {"A": "1"}}), ("PUT", {"envs": {}}),
                         ("DELETE", {"keys": ["KEEP"]})):
        r = change(harness, method, sb["id"], body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active", r.text
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/envs/upload", content=b"A=1\n",
                            headers=harness.auth())
    assert r.status_code == 409
    assert envs_of(harness, sb["id"])["KEEP"]["value"] == "k"  # still listed


def test_dotenv_upload(harness: Harness) -> None:
    sb = spawn(harness)
    text = ('# comment\nexport A=1\nB="multi\nline"\n\nbad line\nQBOX_X=1\nC=\'lit $x\' # c\n'
            "A=2\r\n")
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/envs/upload", content=text.encode(),
                            headers=harness.auth())
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["applied"] == ["B", "C", "A"] and answer["skipped"] == 2
    assert answer["rejected"] == [
        {"line": 6, "reason": "no '=': expected KEY=value"},
        {"line": 7, "reason": "the QBOX_ prefix is reserved for the platform's variables",
         "key": "QBOX_X"}]
    seen = env_in_sandbox(harness, sb["id"])
    assert (seen["A"], seen["C"]) == ("2", "lit $x")
    assert envs_of(harness, sb["id"])["B"]["value"] == "multi\nline"
    # An empty body changes nothing.
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/envs/upload", headers=harness.auth())
    assert r.json() == {"applied": [], "skipped": 0, "rejected": []}
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/envs/upload", content=b"A=\xff\n",
                            headers=harness.auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/envs/upload",
                            content=b"A=" + b"x" * (1024 * 1024), headers=harness.auth())
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_another_member_gets_404_everywhere(harness: Harness) -> None:
    _alice_id, alice = add_user_with_key(harness.settings.data_dir)
    _bob_id, bob = add_user_with_key(harness.settings.data_dir)
    sb = spawn(harness, {"envs": {"SECRET_THING": "alices"}}, key=alice)
    base = f"/v1/sandboxes/{sb['id']}/envs"
    for method, url, body in (("GET", base, None), ("GET", base + "?mask=true", None),
                              ("PATCH", base, {"envs": {"A": "1"}}),
                              ("PUT", base, {"envs": {}}), ("DELETE", base, {"keys": ["SECRET_THING"]}),
                              ("POST", base + "/upload", None)):
        r = harness.client.request(method, url, json=body, headers=harness.auth(bob))
        assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found", (method, url)
        assert "alices" not in r.text
    r = harness.client.post(base + "/upload", content=b"A=1\n", headers=harness.auth(bob))
    assert r.status_code == 404
    assert envs_of(harness, sb["id"], alice)["SECRET_THING"]["value"] == "alices"
    # An admin sees every sandbox, as everywhere else.
    assert envs_of(harness, sb["id"])["SECRET_THING"]["value"] == "alices"


def test_scopes(harness: Harness) -> None:
    owner_id, owner = add_user_with_key(harness.settings.data_dir)
    sb = spawn(harness, key=owner)
    _r, reader = add_user_with_key(harness.settings.data_dir, role="member",
                                   scopes=["sandboxes:read"])
    # The reader is another user: scopes are checked before the sandbox is looked up.
    r = harness.client.get(f"/v1/sandboxes/{sb['id']}/envs", headers=harness.auth(reader))
    assert r.status_code == 403 and r.json()["error"]["details"]["requiredScope"] == "sandboxes:execute"
    r = harness.client.get(f"/v1/sandboxes/{sb['id']}/envs?mask=true", headers=harness.auth(reader))
    assert r.status_code == 404  # read scope is enough for a masked list (of one's own)
    r = change(harness, "PATCH", sb["id"], {"envs": {"A": "1"}}, key=reader)
    assert r.status_code == 403


def test_values_never_reach_the_audit_log(harness: Harness) -> None:
    sb = spawn(harness)
    change(harness, "PATCH", sb["id"], {"envs": {"AUDIT_A": "value-one-xyzzy"}})
    change(harness, "PUT", sb["id"], {"envs": {"AUDIT_B": "value-two-xyzzy"}, "secret": True})
    change(harness, "PATCH", sb["id"], {"envs": {"QBOX_NO": "value-three-xyzzy"}})
    change(harness, "DELETE", sb["id"], {"keys": ["AUDIT_B"]})
    harness.client.post(f"/v1/sandboxes/{sb['id']}/envs/upload",
                        content=b"AUDIT_C=value-four-xyzzy\n", headers=harness.auth())
    logged = entries(harness, targetId=sb["id"])
    text = str(logged)
    assert "xyzzy" not in text
    actions = [(e["action"], e["outcome"], e["detail"]) for e in reversed(logged)
               if e["action"].startswith("env.")]
    assert actions == [("env.set", 200, "set keys=AUDIT_A"),
                       ("env.replace", 200, "replace with keys=AUDIT_B"),
                       ("env.set", 400, "set keys=QBOX_NO"),
                       ("env.delete", 200, "delete keys=AUDIT_B"),
                       ("env.upload", 200, "upload keys=AUDIT_C")]


def test_a_sandbox_its_host_lost_is_marked_and_keeps_its_envs(harness: Harness) -> None:
    sb = spawn(harness, {"envs": {"KEEP": "k"}})
    harness.agent.forget(sb["id"])
    r = change(harness, "PATCH", sb["id"], {"envs": {"A": "1"}})
    assert r.status_code == 409 and r.json()["error"]["details"]["currentState"] == "failed", r.text
    got = harness.client.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).json()
    assert got["status"] == "failed" and "lost" in got["endReason"]
    listed = envs_of(harness, sb["id"])
    assert "A" not in listed and listed["KEEP"]["value"] == "k"  # rolled back with the refusal


def test_an_agent_refusal_changes_nothing(harness: Harness) -> None:
    sb = spawn(harness, {"envs": {"KEEP": "k"}})
    # Its host refuses the change (the sandbox stopped there, the control plane not yet told).
    harness.agent.call(harness.agent.manager.stop, sb["id"], "test")
    r = change(harness, "PUT", sb["id"], {"envs": {"NEW": "n"}})
    assert r.status_code == 409, r.text
    listed = envs_of(harness, sb["id"])
    assert "NEW" not in listed and listed["KEEP"]["value"] == "k"
