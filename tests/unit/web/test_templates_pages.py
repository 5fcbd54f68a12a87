"""The Templates pages over the real control plane and agent: the list shows what the API shows,
the form creates what POST /v1/templates creates (or says what is wrong and creates nothing),
a template's page streams its build log, and nobody reaches another member's template."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qbox.server.web.templates_pages import steps_of
from tests.unit.server.test_templates_api import until
from tests.unit.web.helpers import ORIGIN, WebClient, text_of

Body = dict[str, Any]


@pytest.fixture(autouse=True)
def one_event_loop(request: pytest.FixtureRequest) -> None:
    """The pages' requests run on the app's own event loop, as in a server: a build a page starts
    is a task on that loop (a TestClient outside ``with`` runs each request on a loop of its own,
    which ends with the request and takes the build with it)."""
    for name in ("web_member", "stranger", "web_admin"):
        if name in request.fixturenames:
            user: WebClient = request.getfixturevalue(name)
            user.client.portal = user.harness.client.portal


def create(user: WebClient, name: str, **extra: Any) -> Body:
    r = user.api("POST", "/v1/templates", json={"name": name, "imageRef": "busybox:1", **extra})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def settled(user: WebClient, template_id: str) -> Body:
    def check() -> Body | None:
        body: Body = user.api("GET", f"/v1/templates/{template_id}").json()
        return body if body["status"] != "building" else None
    return until(check)  # type: ignore[no-any-return]


def form(**fields: str) -> dict[str, str]:
    return {"name": "web", "imageRef": "busybox:1", "defaultVcpus": "1", "defaultMemoryMb": "512",
            "defaultDiskMb": "2048", "readyTimeoutS": "30", "user": "user", "runtime": "crun",
            "allowInternetAccess": "on", **fields}


def submit(user: WebClient, fields: dict[str, str]) -> Any:
    """The form as a browser posts it: urlencoded, with the token in a hidden field."""
    return user.send("POST", "/templates", htmx=False, headers={"X-CSRF-Token": ""},
                     data={"csrf_token": user.csrf, **fields})


def test_the_list_shows_what_the_api_shows_the_viewer(web_member: WebClient, stranger: WebClient,
                                                      web_admin: WebClient) -> None:
    create(web_member, "alices")
    create(stranger, "mallorys")
    settled(web_member, "tpl_alices")
    for user in (web_member, stranger, web_admin):
        shown = {t["id"]: t for t in user.api("GET", "/v1/templates").json()}
        page = user.get("/templates")
        assert page.status_code == 200
        listed = set(re.findall(r'href="/templates/(tpl_[^"/]+)"', page.text))
        assert listed == set(shown), user.user_id
    seen = text_of(web_member.get("/templates").text)
    assert "alices" in seen and "mallorys" not in seen and "private" in seen and "built-in" in seen
    # htmx asks for the table alone (it refreshes itself while a build runs).
    table = web_member.get("/templates", htmx=True)
    assert table.text.lstrip().startswith('<div id="template-table"') and "<html" not in table.text


def test_the_form_creates_the_template_and_its_page_shows_the_build(web_member: WebClient) -> None:
    page = web_member.get("/templates/new")
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.text and 'name="public"' not in page.text  # admins only
    r = submit(web_member, form(steps="RUN echo built-by-the-form\nUSER user\n  whoami \\\n  && id\n"
                                      "ENV GREETING=hello world\nWORKDIR /srv",
                                env="A=1\nB=two=2", tags="web, demo", hostSelector="zone=a",
                                startCmd="serve", enableSsh="on"))
    assert (r.status_code, r.headers["location"]) == (303, "/templates/tpl_web")
    made = settled(web_member, "tpl_web")
    assert made["status"] == "ready" and made["ownerId"] == web_member.user_id, made["buildError"]
    assert made["steps"] == [{"run": "echo built-by-the-form", "user": "root"},
                             {"run": "whoami \\\n  && id", "user": "user"},
                             {"env": {"GREETING": "hello world"}}, {"workdir": "/srv"}]
    assert made["env"] == {"A": "1", "B": "two=2"} and made["tags"] == ["web", "demo"]
    assert made["hostSelector"] == {"zone": "a"} and made["startCmd"] == "serve"
    assert made["enableSsh"] is True and made["allowInternetAccess"] is True and made["workdir"] == "/srv"
    shown = web_member.get("/templates/tpl_web")
    assert shown.status_code == 200
    text = text_of(shown.text)
    log = web_member.api("GET", "/v1/templates/tpl_web/build-log").text
    assert log.splitlines()[-1] in text and "ready" in text
    assert "RUN echo built-by-the-form" in text and "(as user)" in text and "ENV GREETING=hello world" in text
    # Finished: the page does not follow the log.
    assert "data-log-stream" not in shown.text
    # The audit log says the same as for the API's create.
    entries = web_member.harness.client.get("/v1/audit", params={"action": "template.create"},
                                            headers=web_member.harness.auth()).json()
    assert [(e["targetId"], e["actorId"], e["detail"]) for e in entries["data"]] == [
        ("tpl_web", web_member.user_id, "name=web imageRef=busybox:1 steps=4")], entries


def test_the_log_streams_as_events_until_the_build_ends(web_member: WebClient) -> None:
    create(web_member, "slow", steps=[{"run": "echo one; sleep 0.5; echo two"}])
    page = web_member.get("/templates/tpl_slow")
    assert 'data-log-stream="/templates/tpl_slow/log/stream"' in page.text  # still building
    with web_member.client.stream("GET", "/templates/tpl_slow/log/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    events = [block for block in body.split("\n\n") if block]
    assert events[-1] == "event: end\ndata: ready"
    lines = [line.removeprefix("data: ") for block in events[:-1] for line in block.split("\n")[1:]]
    assert "\n".join(lines) + "\n" == web_member.api("GET", "/v1/templates/tpl_slow/build-log").text
    assert "one" in lines and "two" in lines
    summary = web_member.get("/templates/tpl_slow", htmx=True)
    assert summary.text.lstrip().startswith('<div id="template-summary"') and "ready" in summary.text


BAD_FIELDS = [
    ({"name": "Bad Name"}, "name", "lowercase letters, digits"),
    ({"imageRef": " "}, "imageRef", "required"),
    ({"defaultVcpus": "many"}, "defaultVcpus", "valid integer"),
    ({"defaultMemoryMb": "0"}, "defaultMemoryMb", "greater than or equal to 1"),
    ({"steps": "ENV nothing-to-set"}, "steps", "line 1: write ENV NAME=value"),
    ({"steps": "echo ok\nENV 1BAD=x"}, "steps", "step 2: invalid environment variable name"),
    ({"env": "QBOX_TOKEN=x"}, "env", "prefix QBOX_ is reserved"),
    ({"hostSelector": "zone"}, "hostSelector", "write key=value"),
    ({"workdir": "relative"}, "workdir", "absolute"),
    ({"registryUsername": "bob"}, "registryUsername", "registry password"),
]


def test_a_bad_field_is_shown_next_to_it_and_nothing_is_created(web_member: WebClient) -> None:
    for fields, field, message in BAD_FIELDS:
        r = submit(web_member, form(**fields))
        assert r.status_code == 400, (fields, r.text)
        problem = re.search(rf'<span class="error" id="{field}-problem">([^<]*)</span>', r.text)
        assert problem and message in problem.group(1), (fields, text_of(r.text))
        assert 'aria-invalid="true"' in r.text and "Traceback" not in r.text and '{"error":' not in r.text
        # What was typed is still there.
        if field in ("name", "defaultVcpus"):
            assert f'value="{fields[field]}"' in r.text
    assert [t for t in web_member.api("GET", "/v1/templates").json() if not t["builtin"]] == []


def test_what_the_service_refuses_shows_on_the_form(web_member: WebClient, web_admin: WebClient) -> None:
    create(web_admin, "taken")
    r = submit(web_member, form(name="taken"))
    assert r.status_code == 409 and "is taken" in text_of(r.text)
    r = submit(web_member, form(name="mine", public="on"))  # only admins make templates public
    assert r.status_code == 403 and "only an admin" in text_of(r.text)
    r = submit(web_member, form(name="local", imageRef="oci:/srv/images:x", registryUsername="bob",
                                registryPassword="s3cret-pw"))
    assert r.status_code == 403 and "for admins" in text_of(r.text), text_of(r.text)
    assert "s3cret-pw" not in r.text  # the password is never put back into the page
    assert {t["name"] for t in web_member.api("GET", "/v1/templates").json() if not t["builtin"]} == set()


def test_a_member_rebuilds_and_deletes_their_own(web_member: WebClient) -> None:
    create(web_member, "mine", steps=[{"run": "echo first"}])
    settled(web_member, "tpl_mine")
    page = web_member.get("/templates/tpl_mine")
    assert "Rebuild" in page.text and "Delete" in page.text
    r = web_member.post("/templates/tpl_mine/rebuild")
    assert (r.status_code, r.headers["hx-redirect"]) == (204, "/templates/tpl_mine")
    rebuilt = settled(web_member, "tpl_mine")
    assert rebuilt["status"] == "ready" and "(build 2)" in web_member.api(
        "GET", "/v1/templates/tpl_mine/build-log").text
    # A plain form (no htmx) is redirected instead.
    r = web_member.send("POST", "/templates/tpl_mine/delete", htmx=False)
    assert (r.status_code, r.headers["location"]) == (303, "/templates")
    assert web_member.api("GET", "/v1/templates/tpl_mine").status_code == 404
    # One audit entry each, under the API's actions, saying they succeeded (a page's answer,
    # a redirect or an empty 204, is its success: no second entry).
    for action, outcome in (("template.rebuild", 200), ("template.delete", 200)):
        entries = web_member.harness.client.get("/v1/audit", params={"action": action},
                                                headers=web_member.harness.auth()).json()["data"]
        assert [(e["targetId"], e["actorId"], e["outcome"]) for e in entries] == [
            ("tpl_mine", web_member.user_id, outcome)], entries


def test_a_builtin_has_no_rebuild_or_delete_and_refuses_them(web_admin: WebClient) -> None:
    page = web_admin.get("/templates/tpl_python")
    assert page.status_code == 200 and "built-in" in text_of(page.text)
    assert "/rebuild" not in page.text and "/delete" not in page.text
    r = web_admin.post("/templates/tpl_python/delete")
    assert r.status_code == 409 and r.headers["hx-retarget"] == "#alerts" and "built in" in text_of(r.text)
    assert web_admin.api("GET", "/v1/templates/tpl_python").status_code == 200


def test_another_members_template_is_not_found_everywhere(web_member: WebClient, stranger: WebClient) -> None:
    create(web_member, "private", env={"SECRET_TOKEN": "alices-secret"})
    settled(web_member, "tpl_private")
    assert stranger.api("GET", "/v1/templates/tpl_private").status_code == 404
    for path in ("/templates/tpl_private", "/templates/tpl_private/log/stream"):
        r = stranger.get(path)
        assert r.status_code == 404 and "alices-secret" not in r.text, path
        assert "Not found" in text_of(r.text)
    assert stranger.get("/templates/tpl_private", htmx=True).status_code == 404
    for path in ("/templates/tpl_private/rebuild", "/templates/tpl_private/delete"):
        assert stranger.post(path).status_code == 404, path
        assert stranger.send("POST", path, htmx=False).status_code == 404, path
    assert "private" not in text_of(stranger.get("/templates").text)
    after = web_member.api("GET", "/v1/templates/tpl_private").json()
    assert after["status"] == "ready" and after["updatedAt"] == settled(web_member, "tpl_private")["updatedAt"]
    assert "(build 1)" in web_member.api("GET", "/v1/templates/tpl_private/build-log").text
    # A malformed id is the API's 404 too.
    assert stranger.get("/templates/not-an-id").status_code == 404


def test_a_public_template_of_another_is_seen_but_not_changed(web_admin: WebClient, stranger: WebClient) -> None:
    create(web_admin, "shared", public=True)
    settled(web_admin, "tpl_shared")
    page = stranger.get("/templates/tpl_shared")
    assert page.status_code == 200 and "/rebuild" not in page.text and "/delete" not in page.text
    # As the API answers a member for a public template that is not theirs: 403.
    assert stranger.api("POST", "/v1/templates/tpl_shared/rebuild").status_code == 403
    for path in ("/templates/tpl_shared/rebuild", "/templates/tpl_shared/delete"):
        r = stranger.post(path)
        assert r.status_code == 403 and "only the owner" in text_of(r.text), path
    assert web_admin.api("GET", "/v1/templates/tpl_shared").json()["status"] == "ready"


def test_changes_without_the_token_or_from_another_site_are_refused(web_member: WebClient) -> None:
    create(web_member, "kept")
    settled(web_member, "tpl_kept")
    client = web_member.client
    attempts = [
        ("/templates", {"csrf_token": web_member.csrf, **form(name="sneaky")}, {"Origin": "https://evil.example"}),
        ("/templates", form(name="sneaky"), {"Origin": ORIGIN}),
        ("/templates/tpl_kept/rebuild", {"csrf_token": web_member.csrf}, {"Origin": "https://evil.example"}),
        ("/templates/tpl_kept/delete", {}, {"Origin": ORIGIN}),
        ("/templates/tpl_kept/delete", {"csrf_token": "wrong"}, {"Origin": ORIGIN}),
        ("/templates/tpl_kept/delete", {"csrf_token": web_member.csrf}, {}),
    ]
    for path, data, headers in attempts:
        r = client.post(path, data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403 and "cross-site request refused" in text_of(r.text), (path, headers)
    kept = web_member.api("GET", "/v1/templates/tpl_kept").json()
    assert kept["status"] == "ready" and "(build 1)" in web_member.api(
        "GET", "/v1/templates/tpl_kept/build-log").text
    assert web_member.api("GET", "/v1/templates/tpl_sneaky").status_code == 404


def test_step_lines() -> None:
    assert steps_of("") == []
    assert steps_of("apt-get update\r\nRUN   make  \n\nUSER app\nRUN id\nWORKDIR /app\nENV A=") == [
        {"run": "apt-get update", "user": "root"}, {"run": "make", "user": "root"},
        {"run": "id", "user": "app"}, {"workdir": "/app"}, {"env": {"A": ""}}]
    assert steps_of("echo a \\\necho b\nrun lower-case is a command") == [
        {"run": "echo a \\\necho b", "user": "root"}, {"run": "run lower-case is a command", "user": "root"}]
    for bad, message in (("USER", "line 1: USER needs"), ("x\nWORKDIR", "line 2: WORKDIR needs"),
                         ("RUN", "line 1: RUN needs"), ("a \\\nb\nENV =1", "line 3: write ENV")):
        with pytest.raises(ValueError, match=message):
            steps_of(bad)
