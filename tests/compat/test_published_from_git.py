"""The published client (qbox-sh 1.4.1) builds templates from git: its CLI's
``templates create-from-git URL --name … --wait`` and its SDK's
``Templates.create_from_git(...).wait_until_ready()`` (a cache hit the second time), then a
sandbox of it; and its error classes for the git codes. The repository is served by
``git http-backend`` on loopback (the compat qbox sets QBOX_GIT_ALLOW_INSECURE)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import run_published_cli, run_published_script
from tests.git_server import GitServer, make_repo
from tests.qbox_process import QboxUp
from tests.registry import BUSYBOX_REPO, registry_with_busybox

pytestmark = pytest.mark.compat

NAMES = ("compat-git", "compat-git-sdk")
DOCKERFILE = "ARG BASE=nothing-here\nFROM $BASE\nARG GREETING=hello\nCOPY hello.txt /hello.txt\n" \
             "RUN echo \"$GREETING\" > /greeting.txt\n"


@pytest.fixture(scope="module")
def base_image() -> Iterator[str]:
    with registry_with_busybox() as address:
        yield f"{address}/{BUSYBOX_REPO}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitServer, list[str]]]:
    root = tmp_path_factory.mktemp("git")
    commits = make_repo(root, "hello.git", [{"Dockerfile": DOCKERFILE, "hello.txt": "hello from git\n"}])
    with GitServer(root) as server:
        yield server, commits


@pytest.fixture
def cleanup(qbox_for_compat: QboxUp) -> Iterator[None]:
    """Whatever the test left: the templates' sandboxes, then the templates (the copy first)."""
    yield
    with qbox_for_compat.client() as api:
        for name in reversed(NAMES):
            for sb in api.get("/v1/sandboxes", params={"templateId": f"tpl_{name}"}).json():
                api.delete(f"/v1/sandboxes/{sb['id']}")
            api.delete(f"/v1/templates/tpl_{name}")


SDK_SCRIPT = textwrap.dedent('''
    import json, sys
    from qbox import Sandbox, Templates

    url, base = sys.argv[1], sys.argv[2]
    build = Templates.create_from_git(url, name="compat-git-sdk", build_args={"BASE": base, "GREETING": "hi"},
                                      default_vcpus=1, default_memory_mb=512)
    info = build.wait_until_ready(timeout=300)
    sb = Sandbox.create("compat-git-sdk", timeout=120)
    try:
        r = sb.commands.run("cat /hello.txt /greeting.txt")
        run = [r.exit_code, r.stdout]
    finally:
        sb.kill()
    print(json.dumps({"cacheHit": build.cache_hit, "sha": build.resolved_commit_sha, "key": build.build_key,
                      "state": build.state, "builtFrom": build.template.built_from_template_id,
                      "ready": info.status, "run": run}))
''')

ERRORS_SCRIPT = textwrap.dedent('''
    import json, sys
    from qbox import Templates

    url, missing = sys.argv[1], sys.argv[2]
    seen = {}
    for label, kwargs in (("ref", {"url": url, "ref": "no-such-branch"}),
                          ("repo", {"url": missing}),
                          ("url", {"url": "ssh://example.com/x.git"}),
                          ("args", {"url": url, "build_args": {"NOT VALID": "x"}}),
                          ("path", {"url": url, "dockerfile_path": "../Dockerfile"})):
        try:
            Templates.create_from_git(name="compat-git-bad", **kwargs)
            seen[label] = "no error"
        except Exception as exc:
            seen[label] = type(exc).__name__
    print(json.dumps(seen))
''')


def test_published_cli_and_sdk_build_from_git(published_python: Path, qbox_for_compat: QboxUp,
                                              base_image: str, repo: tuple[GitServer, list[str]],
                                              cleanup: None) -> None:
    up = qbox_for_compat
    server, commits = repo
    url = server.url("hello.git")
    created = run_published_cli(published_python, up, "-o", "json", "templates", "create-from-git", url,
                                "--name", "compat-git", "--build-arg", f"BASE={base_image}",
                                "--build-arg", "GREETING=hi", "--cpu", "1", "--memory", "512",
                                "--wait", "--wait-timeout", "300", timeout=400)
    assert created.returncode == 0, created.stdout + created.stderr
    template = json.loads(created.stdout)
    assert (template["template_id"], template["status"]) == ("tpl_compat-git", "ready"), template
    assert f"commit {commits[0][:12]}" in created.stderr, created.stderr

    # The same build through the SDK: a cache hit, ready at once, and its sandbox works.
    out = run_published_script(published_python, up, SDK_SCRIPT, url, base_image)
    assert (out["cacheHit"], out["state"], out["builtFrom"]) == (True, "ready", "tpl_compat-git"), out
    assert out["sha"] == commits[0] and out["key"].startswith("sha256:"), out
    assert out["run"] == [0, "hello from git\nhi\n"], out


def test_published_client_errors_for_the_git_codes(published_python: Path, qbox_for_compat: QboxUp,
                                                  repo: tuple[GitServer, list[str]]) -> None:
    up = qbox_for_compat
    server, _ = repo
    url = server.url("hello.git")
    seen = run_published_script(published_python, up, ERRORS_SCRIPT, url, server.url("missing.git"))
    assert seen == {"ref": "RefNotFoundError", "repo": "RepoNotFoundError", "url": "GitUrlInvalidError",
                    "args": "BuildArgsInvalidError", "path": "DockerfilePathInvalidError"}, seen
    # The CLI's exit codes: not found 4, auth 3, server-side validation 7.
    for target, code in ((server.url("missing.git"), 4), (server.url("private/hello.git"), 3),
                         ("ssh://example.com/x.git", 7)):
        done = run_published_cli(published_python, up, "templates", "create-from-git", target,
                                 "--name", "compat-git-bad", "--no-wait")
        assert done.returncode == code, (target, done.stdout, done.stderr)
