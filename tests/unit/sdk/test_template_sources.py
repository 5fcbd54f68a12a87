"""``Template.from_dockerfile`` / ``from_git`` (and the async twins) against a scripted API:
the context tarred here (``.dockerignore`` honoured) and streamed, the bodies on the wire,
waiting, and the git answer's extra fields."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox.sdk import AsyncTemplate, ConnectionConfig, GitTemplateBuild, Template, TemplateBuildError
from qbox.sdk._template_sources import context_archive, dockerfile_text, ignored
from tests.unit.sdk.fakes import API_KEY, BASE_URL, FakeClock

DOCKERFILE = "FROM busybox:1\nCOPY . /app\n"


class Api:
    """Records every request (raw bodies too) and answers from ``answers`` by target."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, bytes, httpx.Headers]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        target = f"{request.method} {request.url.path}"
        self.requests.append((target, request.read(), request.headers))
        answer = self.answers[target]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        status, body = answer
        return httpx.Response(status, json=body)

    def config(self) -> ConnectionConfig:
        return ConnectionConfig(api_key=API_KEY, base_url=BASE_URL, clock=FakeClock(),
                                transport=httpx.MockTransport(self.handle))

    def body(self, target: str) -> Any:
        return json.loads(next(raw for t, raw, _ in self.requests if t == target))

    @property
    def targets(self) -> list[str]:
        return [t for t, _, _ in self.requests]


def template(status: str = "building", **extra: Any) -> dict[str, Any]:
    return {"id": "tpl_web", "name": "web", "status": status, "source": "dockerfile", "imageRef": "", **extra}


def names_in(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return sorted(tar.getnames())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "src" / "cache.pyc").write_bytes(b"\0")
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "node_modules" / "x" / "index.js").write_text("x")
    (root / ".env").write_text("SECRET=1\n")
    (root / "keep.env").write_text("ok\n")
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "link").symlink_to("src/main.py")
    os.mkfifo(root / "fifo")
    (root / ".dockerignore").write_text("# comment\nnode_modules\n*.env\n!keep.env\n**/*.pyc\n/.git\n")
    return root


def test_the_context_leaves_out_what_dockerignore_says_and_special_files(project: Path) -> None:
    handle, size = context_archive(project)
    data = handle.read()
    handle.close()
    assert size == len(data)
    assert names_in(data) == [".dockerignore", "Dockerfile", "keep.env", "link", "src", "src/main.py"]


def test_ignore_rules() -> None:
    rules = [(False, "build"), (False, "*.log"), (True, "important.log"), (False, "**/tmp")]
    assert ignored("build/x/y", rules) and ignored("a.log", rules) and not ignored("important.log", rules)
    assert ignored("deep/down/tmp", rules) and ignored("tmp", rules) and not ignored("src/a.py", rules)


def test_the_dockerfile_as_a_path_as_text_or_from_the_context(project: Path) -> None:
    assert dockerfile_text(str(project / "Dockerfile"), None) == DOCKERFILE
    assert dockerfile_text(project / "Dockerfile", None) == DOCKERFILE
    assert dockerfile_text(None, project) == DOCKERFILE
    assert dockerfile_text("FROM alpine\n", None) == "FROM alpine\n"
    with pytest.raises(ValueError):
        dockerfile_text(None, None)
    with pytest.raises(FileNotFoundError):
        dockerfile_text(Path("/nonexistent/Dockerfile"), None)


def test_from_dockerfile_uploads_the_context_then_creates_and_waits(project: Path) -> None:
    api = Api({"POST /v1/build-contexts": (201, {"id": "bctx_1", "sizeBytes": 1, "sha256": "0" * 64}),
               "POST /v1/templates": (201, template()),
               "GET /v1/templates/tpl_web/build-log": (404, {"error": {"code": "not_found", "message": "x"}}),
               "GET /v1/templates/tpl_web": [(200, template()), (200, template("ready"))]})
    info = Template.from_dockerfile("web", context=project, build_args={"V": 1}, default_memory_mb=1024,  # type: ignore[dict-item]
                                    tags=["t"], wait=True, config=api.config())
    assert info.is_ready and info.source == "dockerfile"
    assert api.targets[:2] == ["POST /v1/build-contexts", "POST /v1/templates"]
    uploaded = next(raw for t, raw, _ in api.requests if t == "POST /v1/build-contexts")
    assert gzip.decompress(uploaded) and "src/main.py" in names_in(uploaded)
    assert api.body("POST /v1/templates") == {
        "name": "web", "dockerfile": DOCKERFILE, "buildArgs": {"V": "1"}, "buildContextId": "bctx_1",
        "defaultVcpus": 1, "defaultMemoryMb": 1024, "readyTimeoutS": 30, "enableSsh": False, "tags": ["t"]}


def test_from_dockerfile_text_without_a_context_sends_none_and_a_failed_build_raises() -> None:
    api = Api({"POST /v1/templates": (201, template()),
               "GET /v1/templates/tpl_web/build-log": (404, {"error": {"code": "not_found", "message": "x"}}),
               "GET /v1/templates/tpl_web": (200, template("failed", buildError="exit status 3"))})
    with pytest.raises(TemplateBuildError, match="exit status 3"):
        Template.from_dockerfile("web", "FROM busybox:1\nRUN exit 3\n", wait=True, config=api.config())
    assert api.targets[0] == "POST /v1/templates"
    assert "buildContextId" not in api.body("POST /v1/templates")


GIT_ANSWER = {**template("ready", source="git", builtFromTemplateId="tpl_old"), "cacheHit": True,
              "resolvedCommitSha": "a" * 40, "buildKey": "bk_1"}


def test_from_git_sends_every_key_and_returns_the_resolution() -> None:
    api = Api({"POST /v1/templates/from-git": (201, GIT_ANSWER)})
    build = Template.from_git("web", "https://example.com/r.git", wait=True, config=api.config())
    assert isinstance(build, GitTemplateBuild)
    assert build.cache_hit and build.resolved_commit_sha == "a" * 40 and build.build_key == "bk_1"
    assert build.template_id == "tpl_web" and build.status == "ready"
    assert build.template.built_from_template_id == "tpl_old"
    # A cache hit is ready: nothing is waited for.
    assert api.targets == ["POST /v1/templates/from-git"]
    assert api.body("POST /v1/templates/from-git") == {
        "name": "web", "url": "https://example.com/r.git", "ref": "main", "dockerfilePath": "",
        "contextPath": ".", "buildArgs": {}, "defaultMemoryMb": 2048, "defaultVcpus": 2, "tags": [],
        "startCmd": "", "readyCmd": "", "readyTimeoutS": 20, "enableSsh": False}


async def test_the_async_twins(project: Path) -> None:
    api = Api({"POST /v1/build-contexts": (201, {"id": "bctx_2", "sizeBytes": 1, "sha256": "0" * 64}),
               "POST /v1/templates": (201, template()),
               "POST /v1/templates/from-git": (201, {**GIT_ANSWER, "cacheHit": False, "status": "building"})})
    info = await AsyncTemplate.from_dockerfile("web", project / "Dockerfile", context=project,
                                               config=api.config())
    assert info.is_building and api.body("POST /v1/templates")["buildContextId"] == "bctx_2"
    build = await AsyncTemplate.from_git("web", "https://example.com/r.git", ref="v1",
                                         build_args={"A": "b"}, config=api.config())
    assert not build.cache_hit and build.status == "building"
    body = api.body("POST /v1/templates/from-git")
    assert body["ref"] == "v1" and body["buildArgs"] == {"A": "b"}
