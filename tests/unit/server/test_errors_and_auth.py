"""Every error in the one envelope, with the statuses of the API reference."""

from __future__ import annotations

import re

from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key


def _error(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert re.match(r"^req_[0-9a-f]{16}$", response.headers["x-request-id"])
    return body["error"]


def test_healthz_and_system_need_no_auth(harness: Harness) -> None:
    c = harness.client
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/v1/system", headers={"Authorization": "Bearer qbox_anon"})
    assert r.status_code == 200
    assert r.json()["version"] >= "1.0.1"
    assert "x-request-id" in r.headers


def test_unknown_route_is_not_found_envelope(harness: Harness) -> None:
    r = harness.client.get("/v1/nope", headers=harness.auth())
    assert r.status_code == 404
    assert _error(r)["code"] == "not_found"


def test_wrong_method_is_405_envelope(harness: Harness) -> None:
    r = harness.client.put("/v1/sandboxes", headers=harness.auth())
    assert r.status_code == 405
    assert _error(r)["code"] == "method_not_allowed"


def test_missing_and_bad_keys_are_401(harness: Harness) -> None:
    c = harness.client
    r = c.get("/v1/sandboxes")
    assert r.status_code == 401 and _error(r)["code"] == "unauthenticated"
    r = c.get("/v1/sandboxes", headers={"Authorization": "Bearer qbox_notarealkey"})
    assert r.status_code == 401 and _error(r)["code"] == "unauthenticated"
    r = c.get("/v1/sandboxes", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_malformed_json_is_validation_error(harness: Harness) -> None:
    r = harness.client.post("/v1/sandboxes", content=b"{not json",
                            headers={**harness.auth(), "Content-Type": "application/json"})
    assert r.status_code == 400
    err = _error(r)
    assert err["code"] == "validation_error"
    assert "body" in err["details"]["fieldErrors"]


def test_body_must_be_an_object(harness: Harness) -> None:
    r = harness.client.post("/v1/sandboxes", json=[1, 2], headers=harness.auth())
    assert r.status_code == 400 and _error(r)["code"] == "validation_error"


def test_field_errors_name_the_field(harness: Harness) -> None:
    r = harness.client.post("/v1/sandboxes", json={"templateId": "tpl_python", "vcpus": "many"},
                            headers=harness.auth())
    assert r.status_code == 400
    assert "vcpus" in _error(r)["details"]["fieldErrors"]


def test_fields_a_client_may_not_set_are_refused(harness: Harness) -> None:
    r = harness.client.post("/v1/sandboxes",
                            json={"templateId": "tpl_python", "ownerId": "usr_x", "status": "running"},
                            headers=harness.auth())
    assert r.status_code == 400
    fields = _error(r)["details"]["fieldErrors"]
    assert {"ownerId", "status"} <= set(fields)
    assert harness.client.get("/v1/sandboxes?status=running", headers=harness.auth()).json() == []


def test_missing_scope_is_403_with_required_scope(harness: Harness) -> None:
    _user, key = add_user_with_key(harness.settings.data_dir, scopes=["sandboxes:read"])
    r = harness.client.post("/v1/sandboxes", json={"templateId": "tpl_python"},
                            headers=harness.auth(key))
    assert r.status_code == 403
    err = _error(r)
    assert err["code"] == "forbidden"
    assert err["details"]["requiredScope"] == "sandboxes:create"
    assert "required scope: sandboxes:create" in err["message"]


def test_auth_me(harness: Harness) -> None:
    r = harness.client.get("/v1/auth/me", headers=harness.auth())
    assert r.status_code == 200
    body = r.json()
    assert body["apiKeyId"].startswith("key_")
    assert body["scopes"] == ["*"]
    assert body["email"] == "admin@localhost"


def test_curl_form_content_type_is_read_as_json(harness: Harness) -> None:
    # curl -d sends application/x-www-form-urlencoded; the API reference's examples rely on it.
    r = harness.client.post("/v1/sandboxes", content=b'{"templateId":"tpl_python"}',
                            headers={**harness.auth(),
                                     "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201, r.text
    assert r.json()["id"].startswith("sb_")


def test_crash_in_a_service_is_internal_without_traceback(harness: Harness) -> None:
    sb = harness.client.post("/v1/sandboxes?wait=true", json={"templateId": "tpl_python"},
                             headers=harness.auth()).json()
    harness.agent.faults.crash = TypeError("'NoneType' object is not callable")  # the agent call crashes
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"},
                            headers=harness.auth())
    assert r.status_code == 500
    err = _error(r)
    assert err["code"] == "internal"
    assert "Traceback" not in r.text and "TypeError" not in r.text


def test_auth_me_needs_no_particular_scope(harness: Harness) -> None:
    _user, key = add_user_with_key(harness.settings.data_dir, scopes=["templates:read"])
    r = harness.client.get("/v1/auth/me", headers=harness.auth(key))
    assert r.status_code == 200 and r.json()["scopes"] == ["templates:read"]
    assert harness.client.get("/v1/sandboxes", headers=harness.auth(key)).status_code == 403
