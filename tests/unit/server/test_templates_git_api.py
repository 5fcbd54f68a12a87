"""POST /v1/templates/from-git over HTTP: the wire shape of WIRE_PROTOCOL §4.10, each error
code, the per-user cache, the audit entry; against repositories served by ``git http-backend``
on loopback and the real Dockerfile template service (its build runs on the unit tests'
agent; the real buildah build is tests/integration/test_from_git_e2e.py's)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from qbox.server.db.tables import Template
from tests.git_server import GitServer, make_repo
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key, db_session

SECRET = "s3cret-token-in-the-url"
Body = dict[str, Any]
DOCKERFILE = "FROM busybox:1\nARG GREETING=hello\nCOPY greeting.txt /greeting.txt\n"


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitServer, list[str]]]:
    root = tmp_path_factory.mktemp("repos")
    commits = make_repo(root, "app.git", [
        {"Dockerfile": DOCKERFILE, "greeting.txt": "one\n"},
        {"Dockerfile": DOCKERFILE, "greeting.txt": "two\n", "sub/Dockerfile": "FROM busybox:1\n"},
    ], tags={"v1": 0})
    with GitServer(root) as server:
        yield server, commits


@pytest.fixture
def harness(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database, git_allow_insecure=True)


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None, git_allow_insecure=True)


def sdk_body(url: str, **fields: Any) -> Body:
    """Every key the published SDK's ``Templates.create_from_git`` sends, with its defaults."""
    return {"name": "web", "url": url, "ref": "main", "dockerfilePath": "", "contextPath": ".",
            "buildArgs": {}, "defaultMemoryMb": 2048, "defaultVcpus": 2, "tags": [], "startCmd": "",
            "readyCmd": "", "readyTimeoutS": 20, "enableSsh": False, **fields}


def post(h: Harness, body: Body, key: str | None = None) -> Any:
    return h.client.post("/v1/templates/from-git", json=body, headers=h.auth(key))


def make_ready(h: Harness, template_id: str) -> None:
    """As a finished build leaves it (the unit tests' agent has no buildah)."""
    with db_session(h.settings.data_dir) as session:
        session.execute(update(Template).where(Template.id == template_id).values(
            status="ready", image_digest="sha256:" + "ab" * 32, build_error=None))
        session.commit()


def settled(h: Harness, template_id: str) -> None:
    deadline = time.monotonic() + 10
    while h.client.get(f"/v1/templates/{template_id}", headers=h.auth()).json()["status"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_sdk_body_makes_a_building_git_template(sqlite_harness: Harness,
                                                    git: tuple[GitServer, list[str]]) -> None:
    h = sqlite_harness
    server, commits = git
    r = post(h, sdk_body(server.url("app.git"), buildArgs={"GREETING": "hi"}, tags=["t"],
                         readyCmd="true"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["id"], body["name"], body["source"]) == ("tpl_web", "web", "git")
    assert body["status"] in ("building", "failed", "ready")
    assert body["cacheHit"] is False and body["builtFromTemplateId"] is None
    assert body["resolvedCommitSha"] == commits[1] and body["buildKey"].startswith("sha256:")
    assert (body["defaultVcpus"], body["defaultMemoryMb"], body["tags"]) == (2, 2048, ["t"])
    assert (body["startCmd"], body["readyCmd"], body["readyTimeoutS"]) == (None, "true", 20)
    shown = h.client.get("/v1/templates/tpl_web", headers=h.auth()).json()
    assert (shown["source"], shown["gitUrl"], shown["gitRef"], shown["resolvedCommitSha"],
            shown["dockerfilePath"], shown["contextPath"], shown["buildKey"]) == (
        "git", server.url("app.git"), "main", commits[1], "Dockerfile", ".", body["buildKey"])
    settled(h, "tpl_web")
    # What the published CLI sends: startCmd/readyCmd left out.
    cli = sdk_body(server.url("app.git"), name="cli", ref="v1", defaultVcpus=1)
    del cli["startCmd"], cli["readyCmd"]
    r = post(h, cli)
    assert r.status_code == 201, r.text
    assert (r.json()["resolvedCommitSha"], r.json()["startCmd"]) == (commits[0], None)
    settled(h, "tpl_cli")
    r = post(h, sdk_body(server.url("app.git"), name="sub", contextPath="sub"))
    assert r.status_code == 201, r.text
    assert h.client.get("/v1/templates/tpl_sub", headers=h.auth()).json()["dockerfilePath"] == "sub/Dockerfile"
    settled(h, "tpl_sub")


def test_the_path_is_not_a_template_id(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    r = h.client.get("/v1/templates/from-git", headers=h.auth())
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    r = h.client.delete("/v1/templates/from-git", headers=h.auth())
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    r = h.client.request("TRACE", "/v1/templates/from-git", headers=h.auth())
    assert (r.status_code, r.headers["allow"]) == (405, "POST")


@pytest.mark.parametrize(("path", "fields", "status", "code"), [
    ("app.git", {"url": "ssh://example.com/r.git"}, 400, "git_url_invalid"),
    ("app.git", {"url": f"https://user:{SECRET}@127.0.0.1/r.git"}, 400, "git_url_invalid"),
    ("app.git", {"ref": "no-such-branch"}, 404, "ref_not_found"),
    ("missing.git", {}, 404, "repo_not_found"),
    ("private/app.git", {}, 401, "repo_unauthorized"),
    ("app.git", {"dockerfilePath": "../Dockerfile"}, 400, "dockerfile_path_invalid"),
    ("app.git", {"dockerfilePath": "nope/Dockerfile"}, 400, "dockerfile_path_invalid"),
    ("app.git", {"contextPath": "greeting.txt"}, 400, "dockerfile_path_invalid"),
    ("app.git", {"buildArgs": {"NOT VALID": "x"}}, 400, "build_args_invalid"),
    ("app.git", {"buildArgs": {"A": "nul\u0000"}}, 400, "build_args_invalid"),
    ("broken/app.git", {}, 503, "git_resolve_unavailable"),
    ("app.git", {"ref": "a..b"}, 400, "validation_error"),
    ("app.git", {"ownerId": "usr_x"}, 400, "validation_error"),
    ("app.git", {"defaultVcpus": "2"}, 400, "validation_error"),
])
def test_each_error_code_over_the_wire(sqlite_harness: Harness, git: tuple[GitServer, list[str]],
                                       path: str, fields: Body, status: int, code: str) -> None:
    h = sqlite_harness
    server, _ = git
    r = post(h, {**sdk_body(server.url(path)), **fields})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert isinstance(r.json()["error"].get("details", {}), dict)
    if code == "git_resolve_unavailable":
        assert r.json()["error"]["details"]["transient"] is True
    assert SECRET not in r.text
    assert h.client.get("/v1/templates/tpl_web", headers=h.auth()).status_code == 404


def test_only_https_to_public_addresses_by_default(tmp_path: Path, git: tuple[GitServer, list[str]]) -> None:
    server, _ = git
    for h in make_harness(tmp_path, database=None):
        before = len(server.requests)
        for url in (server.url("app.git"), f"https://127.0.0.1:{server.port}/app.git",
                    f"file://{server.root}/app.git"):
            r = post(h, sdk_body(url))
            assert (r.status_code, r.json()["error"]["code"]) == (400, "git_url_invalid"), r.text
        assert len(server.requests) == before


def test_the_cache_is_the_users_own(harness: Harness, git: tuple[GitServer, list[str]]) -> None:
    h = harness
    server, _ = git
    url = server.url("app.git")
    _, alice = add_user_with_key(h.settings.data_dir)
    _, bob = add_user_with_key(h.settings.data_dir)
    first = post(h, sdk_body(url, name="a1", buildArgs={"GREETING": "x"}), alice).json()
    settled(h, "tpl_a1")
    make_ready(h, "tpl_a1")
    hit = post(h, sdk_body(url, name="a2", buildArgs={"GREETING": "x"}, defaultVcpus=1), alice)
    assert hit.status_code == 201, hit.text
    body = hit.json()
    assert body["cacheHit"] is True and body["status"] == "ready"
    assert body["builtFromTemplateId"] == "tpl_a1" and body["buildKey"] == first["buildKey"]
    assert body["resolvedCommitSha"] == first["resolvedCommitSha"] and body["defaultVcpus"] == 1
    # Bob asks for the very same build: never served from Alice's.
    bobs = post(h, sdk_body(url, name="b1", buildArgs={"GREETING": "x"}), bob).json()
    assert bobs["cacheHit"] is False and bobs["builtFromTemplateId"] is None
    assert bobs["buildKey"] == first["buildKey"]
    settled(h, "tpl_b1")
    # Other build args: another build.
    other = post(h, sdk_body(url, name="a3", buildArgs={"GREETING": "y"}), alice).json()
    assert other["cacheHit"] is False and other["buildKey"] != first["buildKey"]
    settled(h, "tpl_a3")
    # Bob cannot see Alice's templates, nor take their names.
    assert h.client.get("/v1/templates/tpl_a2", headers=h.auth(bob)).status_code == 404
    r = post(h, sdk_body(url, name="a1", buildArgs={"GREETING": "x"}), bob)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    # Alice's retry of a request she made: the template it made.
    again = post(h, sdk_body(url, name="a2", buildArgs={"GREETING": "x"}, defaultVcpus=1), alice).json()
    assert again["id"] == "tpl_a2" and again["cacheHit"] is True


def test_the_audit_entry_names_the_url_and_ref_never_a_credential(
        sqlite_harness: Harness, git: tuple[GitServer, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    h = sqlite_harness
    server, _ = git
    caplog.set_level(logging.DEBUG)
    url = server.url("app.git")
    assert post(h, sdk_body(url, ref="v1", buildArgs={"TOKEN": SECRET})).status_code == 201
    settled(h, "tpl_web")
    # Build args are stored with the template (the database driver's debug log shows them);
    # a URL's credentials are never taken in.
    caplog.clear()
    with_credentials = url.replace("http://", f"http://me:{SECRET}@")
    assert post(h, sdk_body(with_credentials, name="other")).status_code == 400
    deadline = time.monotonic() + 5
    while True:
        entries = h.client.get("/v1/audit?limit=100", headers=h.auth()).json()
        rows = entries["data"]
        creates = [e for e in rows if e["action"] == "template.create_from_git"]
        if len(creates) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    details = sorted(str(e.get("detail")) for e in creates)
    assert any(f"url={url}" in d and "ref='v1'" in d for d in details), details
    assert len([e for e in creates if e.get("targetId") == "tpl_web"]) == 1, creates
    text = str(entries)
    assert SECRET not in text and SECRET not in caplog.text
