"""The Sandboxes page: the list as the API shows it, spawning, killing and extending from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.server.conftest import Harness, make_harness
from tests.unit.web.helpers import ORIGIN, WebClient, sign_in, text_of

TEMPLATE = "tpl_python"  # the harness's built-in template


def spawn(user: WebClient, name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"templateId": TEMPLATE, **({"labels": {"name": name}} if name else {})}
    r = user.api("POST", "/v1/sandboxes?wait=true&waitTimeoutSec=5", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def status_of(user: WebClient, sandbox_id: str) -> dict[str, Any]:
    r = user.api("GET", f"/v1/sandboxes/{sandbox_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def ids_in(html: str) -> set[str]:
    return set(re.findall(r'href="/sandboxes/(sb_[a-z0-9]+)"', html))


def audited(admin: WebClient, action: str, actor: WebClient) -> list[dict[str, Any]]:
    """The audit entries of ``action`` by ``actor``, as the API lists them."""
    r = admin.api("GET", "/v1/audit", params={"action": action, "actorId": actor.user_id})
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def test_a_member_sees_only_their_own_and_an_admin_sees_all_with_owners(
        web_member: WebClient, stranger: WebClient, web_admin: WebClient) -> None:
    mine, theirs = spawn(web_member, "alpha"), spawn(stranger, "beta")
    page = web_member.get("/sandboxes")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert ids_in(page.text) == {mine["id"]}
    shown = text_of(page.text)
    assert "alpha" in shown and "running" in shown and "python" in shown and "local" in shown
    assert "mallory@example.com" not in shown and "beta" not in shown
    assert f'datetime="{mine["expiresAt"]}" data-countdown' in page.text
    rows = web_member.get("/sandboxes/rows", htmx=True)
    assert rows.status_code == 200 and "<html" not in rows.text and ids_in(rows.text) == {mine["id"]}

    everyone = web_admin.get("/sandboxes")
    assert ids_in(everyone.text) == {mine["id"], theirs["id"]}
    shown = text_of(everyone.text)
    assert "alice@example.com" in shown and "mallory@example.com" in shown and "Owner" in shown


def test_filters_and_search_narrow_the_list_and_stay_in_the_polling_url(web_member: WebClient) -> None:
    first, second = spawn(web_member, "web-frontend"), spawn(web_member, "batch-job")
    killed = web_member.api("DELETE", f"/v1/sandboxes/{second['id']}")
    assert killed.status_code == 204

    page = web_member.get("/sandboxes?status=running")
    assert ids_in(page.text) == {first["id"]}
    assert 'hx-get="/sandboxes/rows?status=running"' in page.text
    assert ids_in(web_member.get("/sandboxes/rows?status=killed").text) == {second["id"]}
    assert ids_in(web_member.get("/sandboxes?q=FRONTEND").text) == {first["id"]}
    assert ids_in(web_member.get(f"/sandboxes/rows?q={second['id'][-6:]}").text) == {second["id"]}
    assert ids_in(web_member.get(f"/sandboxes?template={TEMPLATE}").text) == {first["id"], second["id"]}
    none = web_member.get("/sandboxes?template=tpl_other&q=x")
    assert not ids_in(none.text) and "No sandbox matches these filters" in text_of(none.text)
    bad = web_member.get("/sandboxes?status=sleeping")
    assert bad.status_code == 400 and "must be one of" in text_of(bad.text) and "{" not in text_of(bad.text)


def test_an_empty_list_says_how_to_start(web_member: WebClient) -> None:
    page = web_member.get("/sandboxes")
    assert page.status_code == 200 and not ids_in(page.text)
    assert "No sandboxes yet" in text_of(page.text)
    assert '<option value="tpl_python"' in page.text  # the spawn form offers the built-in


def test_spawning_from_the_page_is_the_apis_spawn(web_member: WebClient, web_admin: WebClient) -> None:
    form = {"templateId": TEMPLATE, "name": "from-the-page", "vcpus": "2", "memoryMb": "512",
            "timeoutSeconds": "600", "allowInternetAccess": "off", "labels": "team=data\n\nstage = dev\n"}
    r = web_member.post("/sandboxes", data=form)
    assert r.status_code == 200
    target = r.headers["hx-redirect"]
    sandbox = status_of(web_member, target.removeprefix("/sandboxes/"))
    assert sandbox["labels"] == {"name": "from-the-page", "team": "data", "stage": "dev"}
    assert sandbox["vm"] == {"vcpus": 2, "memoryMb": 512} and sandbox["timeoutSeconds"] == 600
    assert sandbox["allowInternetAccess"] is False
    # A plain form post (no htmx) is sent on with a 303.
    r = web_member.post("/sandboxes", htmx=False, data={"templateId": TEMPLATE, "csrf_token": web_member.csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/sandboxes/sb_")
    # Each spawn is one audit entry under the API's action, saying what the page answered.
    assert [e["outcome"] for e in audited(web_admin, "sandbox.create", web_member)] == [200, 200]


def test_a_bad_spawn_shows_readable_messages_and_starts_nothing(web_member: WebClient) -> None:
    r = web_member.post("/sandboxes", data={"templateId": TEMPLATE, "vcpus": "0", "memoryMb": "lots",
                                            "timeoutSeconds": "999999", "labels": "ok=1\nno equals sign"})
    assert r.status_code == 400
    shown = text_of(r.text)
    assert "The sandbox was not started" in shown
    assert "vCPUs: Input should be greater than or equal to 1" in shown
    assert "Memory: must be a whole number" in shown
    assert "Timeout: must be at most 86400" in shown
    assert "Labels: line 2: write key=value" in shown
    assert 'value="lots"' in r.text  # the form comes back as it was filled in
    assert "{" not in shown and "Traceback" not in shown
    # Without htmx, the whole page comes back with the form open.
    page = web_member.post("/sandboxes", htmx=False, data={"templateId": TEMPLATE, "vcpus": "0",
                                                           "csrf_token": web_member.csrf})
    assert page.status_code == 400 and "<details class=\"card spawn\" open>" in page.text
    missing = web_member.post("/sandboxes", data={"templateId": "tpl_nothere"})
    assert missing.status_code == 404 and missing.headers["hx-retarget"] == "#alerts"
    assert web_member.api("GET", "/v1/sandboxes").json() == []


def test_kill_and_timeout_by_the_owner(web_member: WebClient, web_admin: WebClient) -> None:
    sandbox = spawn(web_member, "short-lived")
    r = web_member.post(f"/sandboxes/{sandbox['id']}/timeout", data={"timeoutSeconds": "3600"})
    assert r.status_code == 200 and r.headers["hx-trigger"] == "sandboxes-changed"
    assert "timeout is 3600 s" in text_of(r.text)
    after = status_of(web_member, sandbox["id"])
    assert after["timeoutSeconds"] == 3600 and after["expiresAt"] > sandbox["expiresAt"]
    bad = web_member.post(f"/sandboxes/{sandbox['id']}/timeout", data={"timeoutSeconds": "soon"})
    assert bad.status_code == 400 and "must be a whole number" in text_of(bad.text)
    assert status_of(web_member, sandbox["id"])["timeoutSeconds"] == 3600

    r = web_member.post(f"/sandboxes/{sandbox['id']}/kill", data={})
    assert r.status_code == 200 and "is killed" in text_of(r.text)
    assert status_of(web_member, sandbox["id"])["status"] == "killed"
    assert [(e["targetId"], e["outcome"]) for e in audited(web_admin, "sandbox.kill", web_member)] \
        == [(sandbox["id"], 200)]
    timeouts = audited(web_admin, "sandbox.timeout", web_member)
    assert timeouts and timeouts[-1]["detail"] == "timeoutSeconds=3600"
    again = web_member.post(f"/sandboxes/{sandbox['id']}/kill", data={})
    assert again.status_code == 409 and "{" not in text_of(again.text)
    # A plain form post goes back to the page it came from, only if that is ours.
    other = spawn(web_member)
    r = web_member.post(f"/sandboxes/{other['id']}/timeout", htmx=False,
                        data={"timeoutSeconds": "60", "csrf_token": web_member.csrf,
                              "next": f"/sandboxes/{other['id']}"})
    assert (r.status_code, r.headers["location"]) == (303, f"/sandboxes/{other['id']}")
    r = web_member.post(f"/sandboxes/{other['id']}/kill", htmx=False,
                        data={"csrf_token": web_member.csrf, "next": "//evil.example/"})
    assert (r.status_code, r.headers["location"]) == (303, "/sandboxes")
    assert [e["outcome"] for e in audited(web_admin, "sandbox.kill", web_member)] == [200, 409, 200]


def test_a_stranger_can_neither_kill_nor_extend_anothers_sandbox(
        web_member: WebClient, stranger: WebClient) -> None:
    sandbox = spawn(web_member, "alices")
    api_answer = stranger.api("DELETE", f"/v1/sandboxes/{sandbox['id']}")
    assert api_answer.status_code == 404
    for path, form in ((f"/sandboxes/{sandbox['id']}/kill", {}),
                       (f"/sandboxes/{sandbox['id']}/timeout", {"timeoutSeconds": "1"})):
        r = stranger.post(path, data=form)
        assert r.status_code == 404, path
        assert sandbox["id"] in text_of(r.text) and "not found" in text_of(r.text)
    plain = stranger.post(f"/sandboxes/{sandbox['id']}/kill", htmx=False, data={"csrf_token": stranger.csrf})
    assert plain.status_code == 404 and "<h1>Not found</h1>" in plain.text
    assert stranger.post("/sandboxes/not-an-id/kill", data={}).status_code == 404
    after = status_of(web_member, sandbox["id"])
    assert after["status"] == "running" and after["timeoutSeconds"] == sandbox["timeoutSeconds"]
    assert sandbox["id"] not in stranger.get("/sandboxes").text


def test_a_cross_site_post_is_refused_and_changes_nothing(web_member: WebClient) -> None:
    sandbox = spawn(web_member)
    client = web_member.client
    kill, timeout = f"/sandboxes/{sandbox['id']}/kill", f"/sandboxes/{sandbox['id']}/timeout"
    attempts = [(kill, {"Origin": "https://evil.example"}, {"csrf_token": web_member.csrf}),  # another site
                (kill, {"Origin": ORIGIN}, {}),  # no token
                (kill, {"Origin": ORIGIN}, {"csrf_token": "forged"}),
                (kill, {}, {"csrf_token": web_member.csrf}),  # no Origin: not a page of ours
                (timeout, {"Origin": "https://evil.example"}, {"csrf_token": web_member.csrf, "timeoutSeconds": "5"}),
                ("/sandboxes", {"Origin": ORIGIN}, {"templateId": TEMPLATE})]
    for path, headers, form in attempts:
        r = client.post(path, data=form, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (path, headers, form)
        assert "cross-site request refused" in text_of(r.text)
    after = status_of(web_member, sandbox["id"])
    assert after["status"] == "running" and after["timeoutSeconds"] == sandbox["timeoutSeconds"]
    assert [s["id"] for s in web_member.api("GET", "/v1/sandboxes").json()] == [sandbox["id"]]


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[Harness]:
    """A control plane whose spawns bucket holds two."""
    yield from make_harness(tmp_path, database=None, rate_limit_spawn_burst=2.0,
                            rate_limit_spawns_per_second=0.001)


def test_spawns_from_the_page_draw_the_spawns_bucket(tight: Harness) -> None:
    user = sign_in(tight, "bucket@example.com")
    # Even a refused form takes its token, as a refused API spawn does.
    answers = [user.post("/sandboxes", data={"templateId": TEMPLATE, "vcpus": "0"}).status_code for _ in range(3)]
    assert answers == [400, 400, 429]
    refused = user.post("/sandboxes", data={"templateId": TEMPLATE})
    assert refused.status_code == 429 and "rate limit exceeded for sandbox spawns" in text_of(refused.text)
    assert user.api("GET", "/v1/sandboxes").json() == []
