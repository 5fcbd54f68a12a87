"""``qbox templates create --dockerfile`` and ``qbox templates create-from-git`` against a
scripted API: the bodies, the context upload, the exit codes (1 failed, 124 wait ran out)."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import FakeServer, reply

DOCKERFILE = "FROM busybox:1\nCOPY app.txt /app.txt\n"
ONE = "/v1/templates/tpl_web"
LOG = "/v1/templates/tpl_web/build-log"


@dataclass
class UploadingServer(FakeServer):
    """A FakeServer that also takes the context upload (a raw tar body)."""

    uploads: list[bytes] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/build-contexts":
            self.uploads.append(request.read())
            return httpx.Response(201, json={"id": "bctx_9", "sizeBytes": 3, "sha256": "0" * 64})
        return super().handle(request)


@pytest.fixture
def uploading(cli: Cli) -> Cli:
    cli.server = UploadingServer()
    return cli


def template(status: str = "building", **extra: Any) -> dict[str, Any]:
    return {"id": "tpl_web", "name": "web", "status": status, "source": "dockerfile", "imageRef": "", **extra}


def text(body: str) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"}, content=body.encode())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "app.txt").write_text("hi\n")
    (root / "secret.key").write_text("no\n")
    (root / ".dockerignore").write_text("*.key\n")
    return root


def test_create_from_a_dockerfile_uploads_the_context(uploading: Cli, project: Path) -> None:
    cli = uploading
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    cli.server.on("GET", LOG, text("STEP 1/2: FROM busybox:1\n"))
    cli.server.on("GET", ONE, reply(200, template("ready")))
    result = cli("templates", "create", "--name", "web", "--dockerfile", str(project / "Dockerfile"),
                 "--context", str(project), "--build-arg", "A=1", "--build-arg", "B=x=y", "--memory", "1024")
    assert result.exit_code == 0, result.output
    assert result.stdout == "tpl_web\n" and "STEP 1/2" in result.stderr
    assert isinstance(cli.server, UploadingServer) and len(cli.server.uploads) == 1
    with tarfile.open(fileobj=io.BytesIO(cli.server.uploads[0]), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [".dockerignore", "Dockerfile", "app.txt"]
    body = cli.server.last("POST", "/v1/templates").body
    assert body["dockerfile"] == DOCKERFILE and body["buildContextId"] == "bctx_9"
    assert body["buildArgs"] == {"A": "1", "B": "x=y"} and body["defaultMemoryMb"] == 1024
    assert "imageRef" not in body and "steps" not in body


def test_without_a_context_nothing_is_uploaded_and_a_failed_build_exits_1(uploading: Cli, project: Path) -> None:
    cli = uploading
    cli.server.on("POST", "/v1/templates", reply(201, template()))
    cli.server.on("GET", LOG, text("error: exit status 3\n"))
    cli.server.on("GET", ONE, reply(200, template("failed", buildError="the Dockerfile build failed")))
    result = cli("templates", "create", "--name", "web", "--dockerfile", str(project / "Dockerfile"))
    assert result.exit_code == ExitCode.ERROR == 1
    assert isinstance(cli.server, UploadingServer) and cli.server.uploads == []
    assert "buildContextId" not in cli.server.last("POST", "/v1/templates").body


@pytest.mark.parametrize("args", [
    [],
    ["--image-ref", "img:1", "--dockerfile", "DOCKERFILE"],
    ["--image-ref", "img:1", "--build-arg", "A=1"],
    ["--image-ref", "img:1", "--context", "PROJECT"],
    ["--dockerfile", "DOCKERFILE", "--run", "make"],
    ["--dockerfile", "DOCKERFILE", "--build-arg", "novalue"],
])
def test_usage_errors(cli: Cli, project: Path, args: list[str]) -> None:
    args = [str(project / "Dockerfile") if a == "DOCKERFILE" else str(project) if a == "PROJECT" else a
            for a in args]
    result = cli("templates", "create", "--name", "web", *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert cli.server.seen == []


GIT = "/v1/templates/from-git"


def git_answer(status: str, **extra: Any) -> dict[str, Any]:
    return {**template(status, source="git"), "resolvedCommitSha": "c" * 40, "buildKey": "bk_7", **extra}


def test_create_from_git_sends_the_published_body_and_waits(cli: Cli) -> None:
    cli.server.on("POST", GIT, reply(201, git_answer("building", cacheHit=False)))
    cli.server.on("GET", LOG, text("cloning\n"))
    cli.server.on("GET", ONE, reply(200, template("ready", source="git")))
    result = cli("templates", "create-from-git", "https://example.com/r.git", "--name", "web",
                 "--ref", "v2", "--build-arg", "A=1", "--tag", "x", "--warm-state-start-cmd", "serve")
    assert result.exit_code == 0, result.output
    assert result.stdout == "tpl_web\n" and "cloning" in result.stderr
    assert cli.server.last("POST", GIT).body == {
        "name": "web", "url": "https://example.com/r.git", "ref": "v2", "dockerfilePath": "",
        "contextPath": ".", "buildArgs": {"A": "1"}, "defaultMemoryMb": 2048, "defaultVcpus": 2,
        "tags": ["x"], "startCmd": "serve", "readyCmd": "", "readyTimeoutS": 20, "enableSsh": False}


def test_a_cache_hit_is_ready_at_once_and_json_carries_the_resolution(cli: Cli) -> None:
    cli.server.on("POST", GIT, reply(201, git_answer("ready", cacheHit=True, builtFromTemplateId="tpl_a")))
    result = cli("templates", "create-from-git", "https://example.com/r.git", "--name", "web", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cacheHit"] is True and data["resolvedCommitSha"] == "c" * 40 and data["buildKey"] == "bk_7"
    assert cli.server.targets == [f"POST {GIT}"]
    assert "cache hit" in result.stderr


def test_git_exit_codes(cli: Cli) -> None:
    cli.server.on("POST", GIT, reply(201, git_answer("building", cacheHit=False)))
    cli.server.on("GET", LOG, text("building\n"))
    cli.server.on("GET", ONE, reply(200, template("building", source="git")))
    result = cli("templates", "create-from-git", "https://example.com/r.git", "--name", "web",
                 "--wait-timeout", "5")
    assert result.exit_code == 124
    result = cli("templates", "create-from-git", "https://example.com/r.git", "--name", "web", "--no-wait")
    assert result.exit_code == 0 and result.stdout == "tpl_web\n"
    cli.server.routes[("GET", ONE)] = [reply(200, template("failed", buildError="no Dockerfile"))]
    result = cli("templates", "create-from-git", "https://example.com/r.git", "--name", "web")
    assert result.exit_code == 1 and "no Dockerfile" in result.output
