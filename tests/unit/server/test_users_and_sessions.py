"""Users (admin-managed) and dashboard sessions with CSRF protection."""

from __future__ import annotations

from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key

PASSWORD = "correct horse battery"


def add_user(h: Harness, email: str, role: str = "member", password: str | None = PASSWORD) -> dict:  # type: ignore[type-arg]
    body = {"email": email, "role": role, **({"password": password} if password else {})}
    r = h.client.post("/v1/users", json=body, headers=h.auth())
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_admins_add_users_members_cannot(harness: Harness) -> None:
    user = add_user(harness, "Dev@Example.com")
    assert user["email"] == "dev@example.com" and user["role"] == "member" and user["hasPassword"]
    assert "password" not in str(user).lower().replace("haspassword", "")
    r = harness.client.post("/v1/users", json={"email": "dev@example.com"}, headers=harness.auth())
    assert r.status_code == 409
    r = harness.client.post("/v1/users", json={"email": "x@example.com", "role": "god"}, headers=harness.auth())
    assert r.status_code == 400
    r = harness.client.post("/v1/users", json={"email": "y@example.com", "password": "short"}, headers=harness.auth())
    assert r.status_code == 400 and "password" in r.json()["error"]["details"]["fieldErrors"]
    _m, member = add_user_with_key(harness.settings.data_dir)
    r = harness.client.post("/v1/users", json={"email": "z@example.com"}, headers=harness.auth(member))
    assert r.status_code == 403
    assert harness.client.get("/v1/users", headers=harness.auth(member)).status_code == 403
    emails = [u["email"] for u in harness.client.get("/v1/users", headers=harness.auth()).json()]
    assert "dev@example.com" in emails and "admin@localhost" in emails


def test_disabling_a_user_revokes_their_keys(harness: Harness) -> None:
    user_id, key = add_user_with_key(harness.settings.data_dir)
    assert harness.client.get("/v1/sandboxes", headers=harness.auth(key)).status_code == 200
    r = harness.client.post(f"/v1/users/{user_id}/disable", headers=harness.auth())
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    assert harness.client.get("/v1/sandboxes", headers=harness.auth(key)).status_code == 401
    me = harness.client.get("/v1/auth/me", headers=harness.auth()).json()
    r = harness.client.post(f"/v1/users/{me['id']}/disable", headers=harness.auth())
    assert r.status_code == 400  # not yourself


def login(h: Harness, email: str, password: str = PASSWORD, **kw):  # type: ignore[no-untyped-def]
    return h.client.post("/auth/login", json={"email": email, "password": password}, **kw)


def test_login_sets_a_hardened_session_cookie(harness: Harness) -> None:
    add_user(harness, "web@example.com")
    r = login(harness, "web@example.com")
    assert r.status_code == 200, r.text
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("qbox_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert r.json()["csrfToken"]
    session = harness.client.get("/auth/session")
    assert session.status_code == 200 and session.json()["email"] == "web@example.com"
    assert login(harness, "web@example.com", "wrong password!").status_code == 401
    assert login(harness, "nobody@example.com").status_code == 401


def test_secure_flag_when_configured(tmp_path, database) -> None:  # type: ignore[no-untyped-def]
    gen = make_harness(tmp_path, database=database, secure_cookies=True)
    h = next(gen)
    add_user(h, "s@example.com")
    cookie = login(h, "s@example.com").headers["set-cookie"]
    assert "Secure" in cookie
    gen.close()


def test_api_routes_ignore_the_session_cookie(harness: Harness) -> None:
    add_user(harness, "web@example.com", role="admin")
    assert login(harness, "web@example.com").status_code == 200
    r = harness.client.get("/v1/sandboxes")  # cookie jar has the session
    assert r.status_code == 401


def test_cross_site_form_post_is_refused(harness: Harness) -> None:
    add_user(harness, "web@example.com")
    csrf = login(harness, "web@example.com").json()["csrfToken"]
    # What a hostile page's auto-submitting form sends: the cookie rides along, no token.
    r = harness.client.post("/auth/logout", data={"x": "1"},
                            headers={"Origin": "https://evil.example",
                                     "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403 and r.json()["error"]["details"]["reason"] == "csrf"
    # Right token but a foreign origin: still refused.
    r = harness.client.post("/auth/logout", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403
    assert harness.client.get("/auth/session").status_code == 200  # still logged in
    # Our own page: token in the form, same origin.
    r = harness.client.post("/auth/logout", data={"csrf_token": csrf}, headers={"Origin": "http://testserver"})
    assert r.status_code == 204
    assert harness.client.get("/auth/session").status_code == 401
