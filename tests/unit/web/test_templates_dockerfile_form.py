"""The dashboard's template form with a Dockerfile as its source: it creates what POST
/v1/templates with ``dockerfile`` creates, or says what is wrong next to the field."""

from __future__ import annotations

import re

import pytest

from tests.unit.web.helpers import WebClient, text_of
from tests.unit.web.test_templates_pages import form, submit

DOCKERFILE = "ARG BASE=registry.invalid/base:1\r\nFROM $BASE\r\nRUN echo hi\r\n"


@pytest.fixture(autouse=True)
def one_event_loop(web_member: WebClient) -> None:
    web_member.client.portal = web_member.harness.client.portal


def test_a_dockerfile_template_from_the_form(web_member: WebClient) -> None:
    r = submit(web_member, form(name="df", source="dockerfile", imageRef="", dockerfile=DOCKERFILE,
                                buildArgs="A=1\nB=two"))
    assert (r.status_code, r.headers["location"]) == (303, "/templates/tpl_df"), text_of(r.text)
    created = web_member.api("GET", "/v1/templates/tpl_df").json()
    assert created["source"] == "dockerfile" and created["imageRef"] == ""
    assert created["buildArgs"] == {"A": "1", "B": "two"} and created["buildContextId"] is None
    detail = text_of(web_member.get("/templates/tpl_df").text)
    assert "a Dockerfile" in detail and "B=two" in detail
    page = web_member.get("/templates/new")
    assert 'name="dockerfile"' in page.text and 'value="dockerfile"' in page.text


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"source": "dockerfile", "dockerfile": " "}, "dockerfile", "required"),
    ({"source": "dockerfile", "dockerfile": DOCKERFILE, "steps": "echo x"}, "steps", "a Dockerfile has its own"),
    ({"source": "dockerfile", "dockerfile": "FROM oci:/srv/x:1\n"}, "dockerfile", "registry images only"),
    ({"source": "dockerfile", "dockerfile": DOCKERFILE, "buildArgs": "novalue"}, "buildArgs", "NAME=value"),
    ({"source": "image", "imageRef": ""}, "imageRef", "required"),
])
def test_what_is_wrong_shows_next_to_the_field(web_member: WebClient, fields: dict[str, str], field: str,
                                               message: str) -> None:
    r = submit(web_member, form(name="bad", **fields))
    assert r.status_code == 400, text_of(r.text)
    problem = re.search(rf'<span class="error" id="{field}-problem">([^<]*)</span>', r.text)
    assert problem and message in problem.group(1), text_of(r.text)
    assert web_member.api("GET", "/v1/templates/tpl_bad").status_code == 404
