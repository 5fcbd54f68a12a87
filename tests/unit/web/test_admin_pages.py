"""The Users and Audit pages: admins only, the API's services and rules, filters and pages as links."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import sqlalchemy

from qbox.server.services.audit import encode_cursor
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import db_session
from tests.unit.web.helpers import ORIGIN, PASSWORD, WebClient, new_browser, sign_in, text_of


def _users(client: WebClient) -> dict[str, dict[str, object]]:
    r = client.api("GET", "/v1/users")
    assert r.status_code == 200, r.text
    return {u["email"]: u for u in r.json()}


def _audit(client: WebClient, **params: object) -> list[dict[str, object]]:
    r = client.api("GET", "/v1/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def _entry_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr id="entry-(\d+)"', html)]


def _older_link(html: str) -> str:
    found = re.search(r'<a href="([^"]+)" rel="next">Older</a>', html)
    assert found, "no link to older entries"
    return unescape(found.group(1))


def test_a_member_is_refused_every_admin_page_and_change(web_member: WebClient, web_admin: WebClient) -> None:
    other = _users(web_admin)["boss@example.com"]
    before_users = _users(web_admin)
    for path in ("/users", "/audit", "/audit?action=user.create"):
        r = web_member.get(path)
        assert r.status_code == 403, path
        assert r.headers["content-type"].startswith("text/html"), path
        assert "Not allowed" in text_of(r.text) and '{"error"' not in r.text, path
        assert "boss@example.com" not in r.text and 'id="entry-' not in r.text, path
    for htmx in (False, True):
        r = web_member.post("/users", htmx=htmx, data={"email": "sneaky@example.com", "role": "admin",
                                                       "password": "x" * 16, "csrf_token": web_member.csrf})
        assert r.status_code == 403 and '{"error"' not in r.text
        r = web_member.post(f"/users/{other['id']}/disable", htmx=htmx)
        assert r.status_code == 403 and '{"error"' not in r.text
    assert _users(web_admin) == before_users
    # The refusals are audited under the API's actions, as the API's own refusals are.
    for action in ("user.create", "user.disable"):
        refused = _audit(web_admin, action=action, actorId=web_member.user_id)
        assert [e["outcome"] for e in refused] == [403, 403], action


def test_the_users_page_shows_what_the_api_lists(web_admin: WebClient, web_member: WebClient) -> None:
    r = web_admin.get("/users")
    assert r.status_code == 200
    text = text_of(r.text)
    for email, user in _users(web_admin).items():
        assert email in text
        assert user["status"] == "active"
    row = re.search(r"alice@example\.com.*?</tr>", r.text, re.S)
    assert row and "member" in row.group(0) and ">yes<" in row.group(0)
    assert "0 / " in text_of(row.group(0))  # her live sandboxes against her quota
    # No button to disable oneself.
    assert f"/users/{web_admin.user_id}/disable" not in r.text
    assert f"/users/{web_member.user_id}/disable" in r.text


def test_an_admin_adds_a_user_who_then_signs_in(web_admin: WebClient, harness: Harness) -> None:
    r = web_admin.post("/users", htmx=False, data={"email": "  New.Person@Example.com ", "role": "member",
                                                   "password": PASSWORD})
    assert r.status_code == 303
    added = _users(web_admin)["new.person@example.com"]
    assert r.headers["location"] == f"/users?added={added['id']}"
    assert (added["role"], added["hasPassword"]) == ("member", True)
    page = web_admin.get(r.headers["location"])
    assert "Added new.person@example.com." in text_of(page.text)
    entry = _audit(web_admin, action="user.create")[0]
    # One entry, saying what the form's answer was (the API's says 201).
    assert (entry["targetId"], entry["actorId"], entry["outcome"]) == (added["id"], web_admin.user_id, 303)
    assert [e["action"] for e in _audit(web_admin, targetId=added["id"])] == ["user.create"]
    # A plain form post (no htmx header) carries the token as a field.
    r = web_admin.client.post("/users", data={"email": "keyless@example.com", "role": "admin",
                                              "csrf_token": web_admin.csrf},
                              headers={"Origin": ORIGIN}, follow_redirects=False)
    assert r.status_code == 303
    assert _users(web_admin)["keyless@example.com"]["hasPassword"] is False
    browser = new_browser(harness)
    r = browser.post("/login", data={"email": "new.person@example.com", "password": PASSWORD},
                     headers={"Origin": ORIGIN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sandboxes"


def test_a_bad_user_shows_readable_errors_and_adds_nobody(web_admin: WebClient) -> None:
    r = web_admin.api("POST", "/v1/users", json={"email": "taken@example.com"})
    assert r.status_code == 201
    before = _users(web_admin)
    cases = [({"email": "not-an-email", "role": "member"}, 400, "not an email address"),
             ({"email": "x@example.com", "role": "root"}, 400, "must be one of admin, member"),
             ({"email": "y@example.com", "role": "member", "password": "short"}, 400, "at least 12 characters"),
             ({"email": "ab", "role": "member"}, 400, "at least 3 characters"),
             ({"email": "taken@example.com", "role": "member"}, 409, "a user with email taken@example.com exists")]
    for form, status, message in cases:
        r = web_admin.post("/users", htmx=False, data=form)
        assert r.status_code == status, (form, r.text)
        text = text_of(r.text)
        assert "The user was not added" in text and message in text, (form, text)
        assert '{"error"' not in r.text
        assert f'value="{form["email"]}"' in r.text  # the form keeps what was typed (never the password)
        assert 'name="password" type="password"' in r.text and "value=\"short\"" not in r.text
    assert _users(web_admin) == before


def test_disabling_a_user_ends_their_session(web_admin: WebClient, web_member: WebClient) -> None:
    assert web_member.get("/sandboxes").status_code == 200
    r = web_admin.post(f"/users/{web_member.user_id}/disable")  # htmx: the table comes back
    assert r.status_code == 200
    assert 'id="users-table"' in r.text and "Disabled alice@example.com." in text_of(r.text)
    assert 'hx-swap-oob="innerHTML:#alerts"' in r.text
    row = re.search(r"alice@example\.com.*?</tr>", r.text, re.S)
    assert row and "status-disabled" in row.group(0) and "/disable" not in row.group(0)
    assert _users(web_admin)["alice@example.com"]["status"] == "disabled"
    gone = web_member.get("/sandboxes")
    assert (gone.status_code, gone.headers["location"]) == (303, "/login?next=/sandboxes")
    assert web_member.api("GET", "/v1/sandboxes").status_code == 401
    entry = _audit(web_admin, action="user.disable")[0]
    assert (entry["targetId"], entry["outcome"]) == (web_member.user_id, 200)


def test_disabling_without_htmx_shows_the_list_again(web_admin: WebClient, stranger: WebClient) -> None:
    r = web_admin.post(f"/users/{stranger.user_id}/disable", htmx=False)
    assert r.status_code == 200 and "<h1>Users</h1>" in r.text
    assert "Disabled mallory@example.com." in text_of(r.text)
    assert [e["outcome"] for e in _audit(web_admin, targetId=stranger.user_id, action="user.disable")] == [200]


def test_an_admin_cannot_disable_themselves_and_is_told_why(web_admin: WebClient) -> None:
    r = web_admin.post(f"/users/{web_admin.user_id}/disable", htmx=False)
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "you cannot disable yourself" in text_of(r.text) and '{"error"' not in r.text
    r = web_admin.post(f"/users/{web_admin.user_id}/disable")
    assert r.status_code == 400 and r.headers["hx-retarget"] == "#alerts"
    assert "you cannot disable yourself" in text_of(r.text)
    assert _users(web_admin)["boss@example.com"]["status"] == "active"
    r = web_admin.post("/users/usr_doesnotexist00000/disable", htmx=False)
    assert r.status_code == 404 and "not found" in text_of(r.text)
    r = web_admin.post("/users/not an id/disable", htmx=False)
    assert r.status_code == 404


def test_cross_site_and_tokenless_changes_are_refused(web_admin: WebClient, web_member: WebClient) -> None:
    before = _users(web_admin)
    attempts = [
        ("/users", {"Origin": "https://evil.example"}, {"email": "evil@example.com", "csrf_token": web_admin.csrf}),
        ("/users", {"Origin": ORIGIN}, {"email": "evil@example.com"}),
        ("/users", {}, {"email": "evil@example.com", "csrf_token": web_admin.csrf}),
        (f"/users/{web_member.user_id}/disable", {"Origin": "https://evil.example"},
         {"csrf_token": web_admin.csrf}),
        (f"/users/{web_member.user_id}/disable", {"Origin": ORIGIN, "X-CSRF-Token": "wrong"}, {}),
    ]
    for path, headers, data in attempts:
        r = web_admin.client.post(path, data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (path, headers)
        assert "cross-site request refused" in text_of(r.text)
    assert _users(web_admin) == before
    assert web_member.get("/sandboxes").status_code == 200


def test_the_audit_page_filters_and_pages_with_shareable_links(web_admin: WebClient) -> None:
    for n in range(30):
        r = web_admin.api("POST", "/v1/api-keys", json={"name": f"k{n}", "scopes": ["sandboxes:read"]})
        assert r.status_code == 201
    made = _audit(web_admin, action="api_key.create", actorId=web_admin.user_id)
    assert len(made) >= 30
    first = web_admin.get(f"/audit?action=api_key.create&actorId={web_admin.user_id}&limit=25")
    assert first.status_code == 200
    ids = _entry_ids(first.text)
    assert ids == [e["id"] for e in made[:25]]
    assert 'value="api_key.create"' in first.text  # the filter form shows the filter
    assert "page 1" in text_of(first.text).lower()
    older = _older_link(first.text)
    query = parse_qs(urlsplit(older).query)
    assert query["action"] == ["api_key.create"] and query["actorId"] == [web_admin.user_id]
    assert query["limit"] == ["25"] and "cursor" in query
    second = web_admin.get(older)
    assert second.status_code == 200
    second_ids = _entry_ids(second.text)
    assert second_ids and not set(second_ids) & set(ids)
    assert second_ids == [e["id"] for e in made[25:50]]
    text = text_of(second.text)
    assert "Page 2" in text and 'value="api_key.create"' in second.text
    # Back to the newer page, with the filters still on.
    newer = re.search(r'<a href="([^"]+)" rel="prev">Newer</a>', second.text)
    assert newer
    back = web_admin.get(unescape(newer.group(1)))
    assert _entry_ids(back.text) == ids
    # Other filters: the target, a time range that holds nothing.
    target = str(made[0]["targetId"])
    by_target = web_admin.get(f"/audit?targetId={target}")
    assert _entry_ids(by_target.text) == [e["id"] for e in _audit(web_admin, targetId=target)]
    empty = web_admin.get("/audit?from=2001-01-01T00:00&to=2001-01-02T00:00")
    assert empty.status_code == 200 and _entry_ids(empty.text) == []
    assert "No entries match these filters" in text_of(empty.text)
    assert 'value="2001-01-01T00:00:00"' in empty.text
    since = web_admin.get("/audit?from=2001-01-01T00:00Z&action=api_key.create&limit=1000")
    assert len(_entry_ids(since.text)) == len(_audit(web_admin, action="api_key.create"))


def test_bad_filters_are_said_readably(web_admin: WebClient) -> None:
    for path, field in (("/audit?from=yesterday", "from"), ("/audit?limit=0", "limit"),
                        ("/audit?limit=5000", "limit"), ("/audit?cursor=bm90LWl0", "cursor")):
        r = web_admin.get(path)
        assert r.status_code == 400, path
        text = text_of(r.text)
        assert "Check the filters" in text and f"{field}:" in text, (path, text)
        assert "Chain verified" in text and '{"error"' not in r.text


def test_the_page_says_whether_the_chain_holds(web_admin: WebClient) -> None:
    r = web_admin.get("/audit")
    verified = web_admin.api("GET", "/v1/audit/verify").json()
    assert verified["ok"] is True
    found = re.search(r"Chain verified: (\d+) entries, intact\.", text_of(r.text))
    assert found and int(found.group(1)) >= verified["checked"] - 5  # entries made since by the requests
    # Tamper with an entry (as someone with the database could) and the page says where.
    victim = _audit(web_admin, action="auth.login")[-1]
    with db_session(web_admin.harness.settings.data_dir) as session:
        session.execute(sqlalchemy.text("UPDATE audit_log SET detail = 'edited' WHERE id = :id"),
                        {"id": victim["id"]})
        session.commit()
    r = web_admin.get("/audit")
    text = text_of(r.text)
    assert f"Chain broken at entry {victim['id']}: entry was modified: its hash does not match" in text
    assert f'href="/audit?cursor={encode_cursor(int(str(victim["id"])) + 1)}"' in r.text


def test_audit_rows_show_who_did_what(web_admin: WebClient, harness: Harness) -> None:
    other = sign_in(harness, "row-check@example.com")
    r = web_admin.get(f"/audit?action=user.create&targetId={other.user_id}")
    rows = re.findall(r'<tr id="entry-\d+">(.*?)</tr>', r.text, re.S)
    assert len(rows) == 1
    text = text_of(rows[0])
    assert "user.create" in text and "201 ok" in text and other.user_id in text
    assert "testclient" in text  # the source address the entry holds
