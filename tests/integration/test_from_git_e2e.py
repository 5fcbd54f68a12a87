"""Templates from git, end to end: a repository served by ``git http-backend`` on loopback,
a real `qbox up` (QBOX_GIT_ALLOW_INSECURE), buildah, crun, the session registry.

The multi-stage Dockerfile is test_dockerfile_e2e.py's (ARG, FROM … AS, RUN, COPY,
COPY --from, ENV, WORKDIR, USER), committed to the repository with its context. Each test
deletes what it made, also when it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.git_server import GitServer, make_repo
from tests.integration.test_dockerfile_e2e import MULTI_STAGE
from tests.integration.test_pools import member_key
from tests.integration.test_templates_e2e import (
    build_log,
    remove_template,
    running_sandbox,
    stdout_of,
    wait_built,
)
from tests.qbox_process import QboxUp
from tests.registry import BUSYBOX_REPO

pytestmark = pytest.mark.integration

Json = dict[str, object]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GitServer, list[str]]]:
    root = tmp_path_factory.mktemp("git")
    commits = make_repo(root, "demo.git", [
        {"Dockerfile": MULTI_STAGE, "app/hello.txt": "hello from git v1\n", "README": "v1\n",
         "app/Dockerfile": "ARG BASE=nothing-here\nFROM $BASE\nCOPY hello.txt /hello.txt\n"},
        {"Dockerfile": MULTI_STAGE, "app/hello.txt": "hello from git\n", "README": "v2\n",
         "docs/notes.txt": "not in the image\n"},
    ], tags={"v1": 0})
    with GitServer(root) as server:
        yield server.url("demo.git"), server, commits


@pytest.fixture
def made(api: httpx.Client) -> Iterator[list[tuple[httpx.Client, str]]]:
    """(client, template id) of every template a test made: removed afterwards, copies first."""
    templates: list[tuple[httpx.Client, str]] = []
    yield templates
    for client, template_id in reversed(templates):
        remove_template(client, template_id)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def from_git(client: httpx.Client, made: list[tuple[httpx.Client, str]], url: str, name: str,
             **fields: object) -> httpx.Response:
    body = {"name": name, "url": url, "ref": "main", "dockerfilePath": "", "contextPath": ".",
            "buildArgs": {}, "defaultMemoryMb": 512, "defaultVcpus": 1, "tags": [], "startCmd": "",
            "readyCmd": "", "readyTimeoutS": 20, "enableSsh": False, **fields}
    r = client.post("/v1/templates/from-git", json=body)
    if r.status_code == 201:
        made.append((client, str(r.json()["id"])))
    return r


def test_a_repository_builds_and_the_same_request_again_is_a_cache_hit(
        api: httpx.Client, qbox: QboxUp, registry: str, repo: tuple[str, GitServer, list[str]],
        made: list[tuple[httpx.Client, str]]) -> None:
    url, _, commits = repo
    args = {"BASE": f"{registry}/{BUSYBOX_REPO}", "GREETING": "howdy"}
    r = from_git(api, made, url, unique("git-demo"), buildArgs=args)
    assert r.status_code == 201, r.text
    first: Json = r.json()
    assert (first["source"], first["status"], first["cacheHit"]) == ("git", "building", False)
    assert first["resolvedCommitSha"] == commits[1] and first["builtFromTemplateId"] is None
    template_id = str(first["id"])
    done = wait_built(api, template_id, timeout=300)
    log = build_log(api, template_id)
    assert done["status"] == "ready", (done, log)
    assert "STEP" in log and "template ready: sha256:" in log, log
    with running_sandbox(api, template_id) as sb:
        out = stdout_of(api, sb, "cat hello.txt greeting.txt built.txt; echo $APP_MODE; pwd; whoami; "
                                 "ls /srv/app; test -e /srv/app/README || echo no-readme")
        assert out.splitlines() == [
            "hello from git", "howdy from the builder", "built in /srv/app as 0", "production",
            "/srv/app", "app", "builder-uid.txt", "built.txt", "greeting.txt", "hello.txt",
            "no-readme"], out

    # The same inputs again, under another name: ready at once, no build.
    r = from_git(api, made, url, unique("git-again"), buildArgs=args, defaultVcpus=2, tags=["again"])
    assert r.status_code == 201, r.text
    hit: Json = r.json()
    assert (hit["cacheHit"], hit["status"], hit["builtFromTemplateId"]) == (True, "ready", template_id)
    assert (hit["buildKey"], hit["resolvedCommitSha"]) == (first["buildKey"], first["resolvedCommitSha"])
    assert (hit["defaultVcpus"], hit["tags"], hit["imageDigest"]) == (2, ["again"], done["imageDigest"])
    with running_sandbox(api, str(hit["id"])) as sb:
        assert stdout_of(api, sb, "cat /srv/app/hello.txt; whoami") == "hello from git\napp\n"

    # Another member asking for the very same build is not served from the admin's.
    with qbox.client(member_key(api, f"{unique('bob')}@example.com")) as bob:
        bobs_made: list[tuple[httpx.Client, str]] = []
        try:
            r = from_git(bob, bobs_made, url, unique("git-bob"), buildArgs=args)
            assert r.status_code == 201, r.text
            bobs: Json = r.json()
            assert (bobs["cacheHit"], bobs["status"], bobs["builtFromTemplateId"]) == (False, "building", None)
            assert bobs["buildKey"] == first["buildKey"]
            assert bob.get(f"/v1/templates/{hit['id']}").status_code == 404
        finally:
            for client, template_id in bobs_made:
                remove_template(client, template_id)


def test_a_tag_and_a_subdirectory_context(api: httpx.Client, registry: str,
                                          repo: tuple[str, GitServer, list[str]],
                                          made: list[tuple[httpx.Client, str]]) -> None:
    url, _, commits = repo
    r = from_git(api, made, url, unique("git-tag"), ref="v1", contextPath="app",
                 buildArgs={"BASE": f"{registry}/{BUSYBOX_REPO}"})
    assert r.status_code == 201, r.text
    assert r.json()["resolvedCommitSha"] == commits[0]
    template_id = str(r.json()["id"])
    done = wait_built(api, template_id, timeout=300)
    assert done["status"] == "ready", (done, build_log(api, template_id))
    assert done["dockerfilePath"] == "app/Dockerfile" and done["contextPath"] == "app", done
    with running_sandbox(api, template_id) as sb:
        assert stdout_of(api, sb, "cat /hello.txt") == "hello from git v1\n"


@pytest.mark.parametrize(("path", "fields", "status", "code"), [
    ("demo.git", {"ref": "no-such-branch"}, 404, "ref_not_found"),
    ("nothing-here.git", {}, 404, "repo_not_found"),
    ("private/demo.git", {}, 401, "repo_unauthorized"),
    ("demo.git", {"dockerfilePath": "../../etc/passwd"}, 400, "dockerfile_path_invalid"),
    ("demo.git", {"dockerfilePath": "docs/Dockerfile"}, 400, "dockerfile_path_invalid"),
    ("demo.git", {"buildArgs": {"BAD-NAME": "x"}}, 400, "build_args_invalid"),
    ("broken/demo.git", {}, 503, "git_resolve_unavailable"),
])
def test_each_error_code(api: httpx.Client, repo: tuple[str, GitServer, list[str]],
                         made: list[tuple[httpx.Client, str]], path: str, fields: Json,
                         status: int, code: str) -> None:
    _, server, _ = repo
    r = from_git(api, made, server.url(path), unique("git-bad"), **fields)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    if code == "git_resolve_unavailable":
        assert r.json()["error"]["details"]["transient"] is True


def test_a_url_the_rules_refuse(api: httpx.Client, made: list[tuple[httpx.Client, str]],
                                tmp_path: Path) -> None:
    for url in ("ssh://127.0.0.1/demo.git", "https://user:pw@127.0.0.1/demo.git", f"{tmp_path}/demo.git"):
        r = from_git(api, made, url, unique("git-url"))
        assert (r.status_code, r.json()["error"]["code"]) == (400, "git_url_invalid"), r.text
