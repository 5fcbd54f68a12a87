"""The warm pool on the Templates pages: shown on a template's page and in the list, changed by
its form under PATCH /v1/templates/{id}'s rules (a size only by an admin, the rest by the owner
too, nobody else), audited as the API's ``template.update``; the create form's interpreter and
pool fields; a sandbox's page says whether it came from a pool."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qbox.core.errors import ValidationError
from qbox.server.web.templates_pages import pool_change
from tests.unit.web.helpers import WebClient, text_of
from tests.unit.web.test_templates_pages import create, form, settled, submit

Body = dict[str, Any]


@pytest.fixture(autouse=True)
def one_event_loop(request: pytest.FixtureRequest) -> None:
    """As in test_templates_pages: a build a page starts runs on the app's own loop."""
    for name in ("web_member", "stranger", "web_admin"):
        if name in request.fixturenames:
            user: WebClient = request.getfixturevalue(name)
            user.client.portal = user.harness.client.portal


def ready(user: WebClient, name: str, **extra: Any) -> Body:
    create(user, name, **extra)
    body = settled(user, f"tpl_{name}")
    assert body["status"] == "ready", body
    return body


def pool_of(user: WebClient, template_id: str) -> Body:
    return user.api("GET", f"/v1/templates/{template_id}").json()  # type: ignore[no-any-return]


def updates(user: WebClient) -> list[Any]:
    entries = user.harness.client.get("/v1/audit", params={"action": "template.update"},
                                      headers=user.harness.auth()).json()["data"]
    return [(e["targetId"], e["actorId"], e["outcome"]) for e in entries]


def test_an_admin_sets_a_pool_from_the_page(web_admin: WebClient) -> None:
    ready(web_admin, "pooled")
    page = web_admin.get("/templates/tpl_pooled")
    assert page.status_code == 200
    assert 'id="template-pool"' in page.text and 'name="size"' in page.text
    shown = text_of(page.text)
    assert "Pool size 0" in shown and "lazy: its kernel starts on the first code call" in shown
    r = web_admin.post("/templates/tpl_pooled/pool", data={"size": "1", "eager": "on", "codeInterpreter": "eager"})
    assert r.status_code == 200, r.text
    # The pool's status in its place, polling itself now that the pool wants sandboxes.
    assert r.text.lstrip().startswith('<div id="template-pool"') and 'hx-trigger="every 2s"' in r.text
    assert "Pool size 1" in text_of(r.text)
    body = pool_of(web_admin, "tpl_pooled")
    assert body["codeInterpreter"] == "eager" and (body["warmPool"]["size"], body["warmPool"]["eager"]) == (1, True)
    # What the page polls; the list shows ready/size and refreshes while the pool fills.
    assert 'data-testid="pool-ready"' in web_admin.get("/templates/tpl_pooled/pool", htmx=True).text
    table = web_admin.get("/templates", htmx=True).text
    assert f'{body["warmPool"]["ready"]}/1' in text_of(table.split('data-testid="pool-tpl_pooled"')[1][:200])
    if body["warmPool"]["ready"] != 1:
        assert 'hx-trigger="every 2s"' in table
    # The same audit entry as the API's PATCH, once.
    assert updates(web_admin) == [("tpl_pooled", web_admin.user_id, 200)]
    # A plain form (no htmx) is sent back to the page; the unticked box turns eager off.
    r = web_admin.send("POST", "/templates/tpl_pooled/pool", htmx=False, headers={"X-CSRF-Token": ""},
                       data={"csrf_token": web_admin.csrf, "size": "0"})
    assert (r.status_code, r.headers["location"]) == (303, "/templates/tpl_pooled")
    assert pool_of(web_admin, "tpl_pooled")["warmPool"]["size"] == 0
    assert pool_of(web_admin, "tpl_pooled")["warmPool"]["eager"] is False


def test_a_members_pool_size_is_refused_with_a_readable_page(web_member: WebClient) -> None:
    ready(web_member, "mine")
    page = web_member.get("/templates/tpl_mine")
    # The owner changes the interpreter and eagerness; the size field is an admin's.
    assert 'name="codeInterpreter"' in page.text and 'name="size"' not in page.text
    for htmx in (True, False):
        r = web_member.send("POST", "/templates/tpl_mine/pool", htmx=htmx, headers={"X-CSRF-Token": ""},
                            data={"csrf_token": web_member.csrf, "size": "1", "eager": "on"})
        assert r.status_code == 403
        assert "only an admin may give a template a warm pool" in text_of(r.text)
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)
        if htmx:
            assert r.headers["hx-retarget"] == "#alerts"
        else:
            assert "Not allowed" in text_of(r.text) and "<html" in r.text
    assert pool_of(web_member, "tpl_mine")["warmPool"]["size"] == 0
    # A size of 0 and the rest are the owner's to change.
    r = web_member.post("/templates/tpl_mine/pool", data={"size": "0", "codeInterpreter": "eager"})
    assert r.status_code == 200, r.text
    body = pool_of(web_member, "tpl_mine")
    assert body["codeInterpreter"] == "eager" and body["warmPool"]["eager"] is False


def test_a_member_cannot_change_another_members_pool(web_member: WebClient, stranger: WebClient) -> None:
    before = ready(web_member, "private")
    for fields in ({"codeInterpreter": "eager"}, {"eager": "on", "codeInterpreter": "lazy"}, {"size": "0"}):
        r = stranger.post("/templates/tpl_private/pool", data=fields)
        assert r.status_code == 404 and "Not found" in text_of(r.text), fields
        assert stranger.get("/templates/tpl_private/pool", htmx=True).status_code == 404
    after = pool_of(web_member, "tpl_private")
    assert (after["codeInterpreter"], after["warmPool"]) == (before["codeInterpreter"], before["warmPool"])


def test_a_member_sees_a_builtins_pool_but_cannot_change_it(web_member: WebClient) -> None:
    page = web_member.get("/templates/tpl_python")
    assert page.status_code == 200 and 'id="template-pool"' in page.text
    assert 'action="/templates/tpl_python/pool"' not in page.text
    r = web_member.post("/templates/tpl_python/pool", data={"codeInterpreter": "eager"})
    assert r.status_code == 403 and r.headers["hx-retarget"] == "#alerts"


def test_the_pool_form_is_read_strictly() -> None:
    change = pool_change({"size": " 3 ", "eager": "on", "codeInterpreter": "lazy"})
    assert (change.warm_pool_size, change.warm_pool_eager, change.code_interpreter) == (3, True, "lazy")
    assert pool_change({}).warm_pool_size is None and pool_change({}).warm_pool_eager is False
    with pytest.raises(ValidationError) as found:
        pool_change({"size": "-1", "codeInterpreter": "sometimes"})
    assert set(found.value.field_errors) == {"size", "codeInterpreter"}


def test_the_create_form_has_the_interpreter_and_the_pool(web_member: WebClient, web_admin: WebClient) -> None:
    member_form = web_member.get("/templates/new").text
    assert 'name="codeInterpreter"' in member_form and 'name="warmPoolSize"' not in member_form
    admin_form = web_admin.get("/templates/new").text
    assert 'name="warmPoolSize"' in admin_form and 'name="warmPoolEager"' in admin_form
    r = submit(web_admin, form(name="eagerone", codeInterpreter="eager", warmPoolSize="2"))
    assert (r.status_code, r.headers.get("location")) == (303, "/templates/tpl_eagerone"), r.text
    body = pool_of(web_admin, "tpl_eagerone")
    assert body["codeInterpreter"] == "eager"
    assert (body["warmPool"]["size"], body["warmPool"]["eager"]) == (2, False)  # the box was not ticked
    # A member's pool is refused on the form itself, which keeps what was filled in.
    r = submit(web_member, form(name="greedy", warmPoolSize="1", warmPoolEager="on"))
    assert r.status_code == 403 and "only an admin may give a template a warm pool" in text_of(r.text)
    assert 'value="greedy"' in r.text
    assert web_member.api("GET", "/v1/templates/tpl_greedy").status_code == 404
    r = submit(web_admin, form(name="negative", warmPoolSize="-1"))
    assert r.status_code == 400 and 'id="warmPoolSize-problem"' in r.text, r.text


def test_a_sandbox_page_says_how_it_started(web_member: WebClient) -> None:
    r = web_member.api("POST", "/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": "tpl_python"})
    assert r.status_code == 201, r.text
    assert r.json()["fromPool"] is False
    page = web_member.get(f"/sandboxes/{r.json()['id']}")
    assert page.status_code == 200 and "booted on request" in text_of(page.text)
