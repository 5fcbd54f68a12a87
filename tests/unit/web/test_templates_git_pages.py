"""The "From git" form over the real control plane: it makes what POST /v1/templates/from-git
makes, from a repository served by ``git http-backend`` on loopback, or shows on the form, in
words, what is wrong (and makes nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.git_server import GitServer, make_repo
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.web.helpers import WebClient, sign_in, text_of


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitServer, str]]:
    root = tmp_path_factory.mktemp("repos")
    [commit] = make_repo(root, "site.git", [{"Dockerfile": "FROM busybox:1\nARG MODE\n",
                                             "index.html": "hi\n"}])
    with GitServer(root) as server:
        yield server, commit


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None, git_allow_insecure=True)


@pytest.fixture
def member(harness: Harness) -> WebClient:
    user = sign_in(harness, "alice@example.com")
    # The pages' requests on the app's own loop (a build the page starts is a task on it).
    user.client.portal = harness.client.portal
    return user


def submit(user: WebClient, **fields: str) -> Any:
    return user.send("POST", "/templates/from-git", htmx=False, headers={"X-CSRF-Token": ""},
                     data={"csrf_token": user.csrf, "ref": "main", "contextPath": ".",
                           "defaultVcpus": "2", "defaultMemoryMb": "2048", "readyTimeoutS": "20", **fields})


def test_the_list_links_to_the_form_and_the_form_starts_with_the_sdks_defaults(member: WebClient) -> None:
    assert 'href="/templates/new-from-git"' in member.get("/templates").text
    page = member.get("/templates/new-from-git")
    assert page.status_code == 200
    for name, value in (("ref", "main"), ("contextPath", "."), ("defaultVcpus", "2"),
                        ("defaultMemoryMb", "2048")):
        assert f'name="{name}" type="' in page.text and f'value="{value}"' in page.text


def test_the_form_makes_a_git_template(member: WebClient, repo: tuple[GitServer, str]) -> None:
    server, commit = repo
    r = submit(member, name="site", url=server.url("site.git"), buildArgs="MODE=prod\n\n", tags="a, b")
    assert (r.status_code, r.headers["location"]) == (303, "/templates/tpl_site"), r.text
    body = member.api("GET", "/v1/templates/tpl_site").json()
    assert (body["source"], body["resolvedCommitSha"], body["buildArgs"], body["tags"]) == (
        "git", commit, {"MODE": "prod"}, ["a", "b"])
    assert body["ownerId"] == member.user_id
    page = member.get("/templates/tpl_site")
    assert page.status_code == 200
    assert server.url("site.git") in page.text and commit in page.text and "MODE=prod" in page.text


@pytest.mark.parametrize(("fields", "status", "field", "words"), [
    ({"ref": "nope"}, 404, "ref", "no branch, tag or commit"),
    ({"url": "ssh://example.com/x.git"}, 400, "url", "must start with"),
    ({"path": "missing.git"}, 404, "url", "no git repository"),
    ({"path": "private/site.git"}, 401, "url", "asks for credentials"),
    ({"dockerfilePath": "nope/Dockerfile"}, 400, "dockerfilePath", "no Dockerfile"),
    ({"buildArgs": "NO VALUE LINE"}, 400, "buildArgs", "line 1: write NAME=value"),
    ({"buildArgs": "BAD-NAME=x"}, 400, "buildArgs", "like environment variables"),
    ({"name": "Bad Name"}, 400, "name", "lowercase letters"),
])
def test_errors_come_back_on_the_form(member: WebClient, repo: tuple[GitServer, str],
                                      fields: dict[str, str], status: int, field: str, words: str) -> None:
    server, _ = repo
    path = fields.pop("path", "site.git")
    r = submit(member, **{"name": "site", "url": server.url(path), **fields})
    assert r.status_code == status, r.text
    assert f'id="{field}-problem"' in r.text and words in text_of(r.text), text_of(r.text)
    # The form as it was filled in.
    assert 'value="site"' in r.text or fields.get("name") == "Bad Name"
    assert member.api("GET", "/v1/templates/tpl_site").status_code == 404
