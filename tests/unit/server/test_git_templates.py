"""Templates from git: the service against real repositories served by ``git http-backend`` on
loopback, over a real database, with a recording stand-in for the Dockerfile build (the real
build runs in tests/integration/test_from_git_e2e.py)."""
from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from qbox.core.errors import (
    BuildArgsInvalidError,
    ConflictError,
    DockerfilePathInvalidError,
    GitResolveUnavailableError,
    GitUrlInvalidError,
    PayloadTooLargeError,
    QboxError,
    RefNotFoundError,
    RepoNotFoundError,
    RepoUnauthorizedError,
    ValidationError,
)
from qbox.core.ids import template_id_for
from qbox.server.db.engine import make_async_engine, make_sessionmaker, migrate
from qbox.server.db.tables import Template, User
from qbox.server.principal import Principal
from qbox.server.services import git_remote, git_templates
from qbox.server.services.context import AgentPool, ServiceContext
from qbox.server.services.dockerfile_templates import DockerfileTemplateSpec
from qbox.server.services.git_remote import failure, git_environment
from qbox.server.services.git_templates import GitTemplateRequest, GitTemplates
from qbox.server.settings import ServerSettings
from tests.git_server import GitServer, make_repo


# --- the service, against real repositories ------------------------------------------------

DOCKERFILE = "FROM scratch\nCOPY hello.txt /hello.txt\n"
APP_DOCKERFILE = "FROM scratch\nARG GREETING\nCOPY . /app\n"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitServer, dict[str, list[str]]]]:
    root = tmp_path_factory.mktemp("repos")
    commits = {
        "app.git": make_repo(root, "app.git", [
            {"Dockerfile": "FROM scratch\n", "hello.txt": "first\n"},
            {"Dockerfile": "FROM scratch\n", "hello.txt": "middle\n"},
            {"Dockerfile": DOCKERFILE, "hello.txt": "second\n", "app/Dockerfile": APP_DOCKERFILE,
             "app/main.py": "print('hi')\n", "docker/prod.Dockerfile": "FROM scratch\n",
             "escape": ("link", "../../../etc/passwd"), "inside": ("link", "app/Dockerfile"),
             "big.bin": "x" * 4096},
        ], tags={"v1": 0}),
    }
    with GitServer(root) as server:
        yield server, commits


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ServiceContext]:
    settings = ServerSettings(data_dir=tmp_path, agent_secret="x", git_allow_insecure=True,
                              git_timeout_seconds=20)
    url = settings.resolved_database_url()
    await asyncio.to_thread(migrate, url)
    engine = make_async_engine(url)
    context = ServiceContext(settings=settings, sessions=make_sessionmaker(engine), agents=AgentPool())
    async with context.sessions() as session:
        session.add_all([User(id="usr_alice", email="alice@example.com", role="member"),
                         User(id="usr_bob", email="bob@example.com", role="member")])
        await session.commit()
    try:
        yield context
    finally:
        await engine.dispose()


ALICE = Principal(user_id="usr_alice", email="alice@example.com", role="member", api_key_id=None,
                  scopes=("*",))
BOB = replace(ALICE, user_id="usr_bob", email="bob@example.com")


class RecordedBuilds:
    """Stands in for services.dockerfile_templates: writes the template row the real one would
    (``building``, or ``ready`` for a copy) and keeps each spec."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.created: list[DockerfileTemplateSpec] = []
        self.copied: list[tuple[DockerfileTemplateSpec, str]] = []

    async def create(self, principal: Principal, spec: DockerfileTemplateSpec) -> Template:
        self.created.append(spec)
        return await self._insert(principal, spec, "building", None)

    async def copy_ready(self, principal: Principal, spec: DockerfileTemplateSpec,
                         source: Template) -> Template:
        self.copied.append((spec, source.id))
        return await self._insert(principal, spec, "ready", source.id)

    async def _insert(self, principal: Principal, spec: DockerfileTemplateSpec, status: str,
                      source: str | None) -> Template:
        async with self.ctx.sessions() as session:
            if await session.get(Template, template_id_for(spec.name)) is not None:
                raise ConflictError("name taken")
            template = Template(id=template_id_for(spec.name), name=spec.name, status=status,
                                owner_id=principal.user_id, source="git", build_key=spec.build_key,
                                resolved_commit_sha=spec.resolved_commit_sha,
                                built_from_template_id=source, dockerfile=spec.dockerfile)
            session.add(template)
            await session.commit()
            return template


def service(ctx: ServiceContext) -> tuple[GitTemplates, RecordedBuilds]:
    builds = RecordedBuilds(ctx)
    return GitTemplates(ctx, builds), builds  # type: ignore[arg-type]


def members(spec: DockerfileTemplateSpec) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(spec.context))) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


async def test_a_branch_is_resolved_fetched_and_handed_to_the_dockerfile_build(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, commits = repos
    templates, builds = service(ctx)
    result = await templates.create(ALICE, GitTemplateRequest(
        name="web", url=server.url("app.git"), ref="main", build_args={"GREETING": "hi"},
        tags=("a",), start_cmd="", ready_cmd="true"))
    assert result.resolved_commit_sha == commits["app.git"][2] and not result.cache_hit
    assert result.template.status == "building" and result.build_key.startswith("sha256:")
    spec = builds.created[0]
    assert (spec.dockerfile, spec.source, spec.git_ref, spec.dockerfile_path, spec.context_path) == (
        DOCKERFILE, "git", "main", "Dockerfile", ".")
    assert (spec.start_cmd, spec.ready_cmd, spec.build_args, spec.build_key) == (
        None, "true", {"GREETING": "hi"}, result.build_key)
    files = members(spec)
    assert files["hello.txt"] == b"second\n" and files["app/main.py"] == b"print('hi')\n"


async def test_a_subdirectory_context_and_its_dockerfile(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    templates, builds = service(ctx)
    await templates.create(ALICE, GitTemplateRequest(name="sub", url=server.url("app.git"),
                                                     context_path="app"))
    assert builds.created[0].dockerfile == APP_DOCKERFILE
    assert set(members(builds.created[0])) == {"Dockerfile", "main.py"}
    # A link to a file inside the repository is followed.
    await templates.create(ALICE, GitTemplateRequest(name="linked", url=server.url("app.git"),
                                                     dockerfile_path="inside"))
    assert builds.created[1].dockerfile == APP_DOCKERFILE


@pytest.mark.parametrize(("ref", "index"), [("v1", 0), ("refs/tags/v1", 0), ("HEAD", 2)])
async def test_tags_and_head(ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]],
                             ref: str, index: int) -> None:
    server, commits = repos
    templates, builds = service(ctx)
    result = await templates.create(ALICE, GitTemplateRequest(name="t", url=server.url("app.git"), ref=ref))
    assert result.resolved_commit_sha == commits["app.git"][index]
    assert builds.created[0].dockerfile == ("FROM scratch\n" if index == 0 else DOCKERFILE)


@pytest.mark.parametrize("length", [40, 12, 7])
async def test_a_commit_no_ref_points_at_full_or_short(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]], length: int) -> None:
    server, commits = repos
    middle = commits["app.git"][1]
    templates, builds = service(ctx)
    result = await templates.create(ALICE, GitTemplateRequest(name="old", url=server.url("app.git"),
                                                              ref=middle[:length].upper()))
    assert result.resolved_commit_sha == middle
    assert members(builds.created[0])["hello.txt"] == b"middle\n"


async def test_file_urls_with_the_setting(ctx: ServiceContext,
                                          repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, commits = repos
    templates, _ = service(ctx)
    result = await templates.create(ALICE, GitTemplateRequest(name="local", url=f"file://{server.root}/app.git"))
    assert result.resolved_commit_sha == commits["app.git"][2]


async def errors_of(ctx: ServiceContext, **request: Any) -> QboxError:
    templates, builds = service(ctx)
    with pytest.raises(QboxError) as caught:
        await templates.create(ALICE, GitTemplateRequest(name="bad", **request))
    assert not builds.created and not builds.copied
    return caught.value


@pytest.mark.parametrize(("path", "ref", "error"), [
    ("app.git", "nope", RefNotFoundError),
    ("app.git", "0123456789abcdef0123456789abcdef01234567", RefNotFoundError),
    ("app.git", "0123456", RefNotFoundError),
    ("missing.git", "main", RepoNotFoundError),
    ("private/app.git", "main", RepoUnauthorizedError),
    ("moved/app.git", "main", RepoNotFoundError),
])
async def test_each_resolution_error(ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]],
                                     path: str, ref: str, error: type[QboxError]) -> None:
    server, _ = repos
    caught = await errors_of(ctx, url=server.url(path), ref=ref)
    assert type(caught) is error, caught


async def test_a_server_error_is_a_transient_503(ctx: ServiceContext,
                                                 repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    caught = await errors_of(ctx, url=server.url("broken/app.git"))
    assert isinstance(caught, GitResolveUnavailableError) and caught.status == 503
    assert caught.details["transient"] is True


async def test_a_server_that_does_not_answer_is_a_transient_503_in_time(
        tmp_path: Path, ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    ctx.settings = ctx.settings.model_copy(update={"git_timeout_seconds": 1.0})
    started = time.monotonic()
    caught = await errors_of(ctx, url=server.url("slow/app.git"))
    assert isinstance(caught, GitResolveUnavailableError) and caught.details["transient"] is True
    assert time.monotonic() - started < 8


async def test_nothing_is_fetched_from_a_private_address_without_the_setting(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    ctx.settings = ctx.settings.model_copy(update={"git_allow_insecure": False})
    before = len(server.requests)
    for url in (server.url("app.git"), f"https://127.0.0.1:{server.port}/app.git",
                f"https://localhost:{server.port}/app.git", f"file://{server.root}/app.git",
                f"https://2130706433:{server.port}/app.git", f"https://0x7f.0.0.1:{server.port}/app.git",
                f"https://[::1]:{server.port}/app.git", f"https://[::ffff:127.0.0.1]:{server.port}/app.git"):
        assert isinstance(await errors_of(ctx, url=url), GitUrlInvalidError)
    assert len(server.requests) == before


@pytest.mark.parametrize(("dockerfile", "context", "field"), [
    ("nope/Dockerfile", ".", "dockerfilePath"),      # missing
    ("app", ".", "dockerfilePath"),                  # a directory
    ("escape", ".", "dockerfilePath"),               # a link out of the repository
    ("hello.txt/Dockerfile", ".", "dockerfilePath"),  # through a file
    ("", "docker", "dockerfilePath"),                # no Dockerfile in that context
    ("Dockerfile", "hello.txt", "contextPath"),      # not a directory
    ("Dockerfile", "nope", "contextPath"),
])
async def test_dockerfile_and_context_paths_in_the_commit(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]],
        dockerfile: str, context: str, field: str) -> None:
    server, _ = repos
    caught = await errors_of(ctx, url=server.url("app.git"), dockerfile_path=dockerfile, context_path=context)
    assert isinstance(caught, DockerfilePathInvalidError) and caught.details["field"] == field


async def test_a_context_over_the_limit_is_refused(ctx: ServiceContext,
                                                   repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    ctx.settings = ctx.settings.model_copy(update={"max_build_context_bytes": 4096})
    caught = await errors_of(ctx, url=server.url("app.git"))
    assert isinstance(caught, PayloadTooLargeError) and caught.status == 413


async def test_bad_build_args_and_caps_before_any_git(ctx: ServiceContext,
                                                      repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    before = len(server.requests)
    assert isinstance(await errors_of(ctx, url=server.url("app.git"), build_args={"A B": "x"}),
                      BuildArgsInvalidError)
    assert isinstance(await errors_of(ctx, url=server.url("app.git"), default_vcpus=10_000), ValidationError)
    assert len(server.requests) == before


async def _ready(ctx: ServiceContext, template_id: str) -> None:
    async with ctx.sessions() as session:
        await session.execute(update(Template).where(Template.id == template_id).values(status="ready"))
        await session.commit()


async def test_the_cache_reuses_a_ready_build_of_the_same_user_and_inputs(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    templates, builds = service(ctx)
    url = server.url("app.git")
    first = await templates.create(ALICE, GitTemplateRequest(name="one", url=url, build_args={"A": "1"}))
    # Building: not reused yet.
    again = await templates.create(ALICE, GitTemplateRequest(name="two", url=url, build_args={"A": "1"}))
    assert not again.cache_hit and len(builds.created) == 2
    await _ready(ctx, first.template.id)
    requests_before = len(server.requests)
    hit = await templates.create(ALICE, GitTemplateRequest(name="three", url=url, build_args={"A": "1"},
                                                           default_vcpus=1, tags=("x",)))
    assert hit.cache_hit and hit.template.status == "ready"
    assert hit.template.built_from_template_id == first.template.id
    assert (hit.resolved_commit_sha, hit.build_key) == (first.resolved_commit_sha, first.build_key)
    spec, source = builds.copied[0]
    assert source == first.template.id and spec.name == "three" and spec.default_vcpus == 1
    # Only the refs were asked for (protocol v2's ls-refs: a GET and a POST), no pack.
    assert len(server.requests[requests_before:]) <= 2
    # Another input: built.
    other = await templates.create(ALICE, GitTemplateRequest(name="four", url=url, build_args={"A": "2"}))
    assert not other.cache_hit and len(builds.created) == 3
    # Another member: never served from Alice's build.
    bobs = await templates.create(BOB, GitTemplateRequest(name="bobs", url=url, build_args={"A": "1"}))
    assert not bobs.cache_hit and builds.created[-1].name == "bobs"


async def test_the_same_request_again_answers_the_template_it_made(
        ctx: ServiceContext, repos: tuple[GitServer, dict[str, list[str]]]) -> None:
    server, _ = repos
    templates, builds = service(ctx)
    request = GitTemplateRequest(name="same", url=server.url("app.git"))
    first = await templates.create(ALICE, request)
    again = await templates.create(ALICE, request)
    assert again.template.id == first.template.id and len(builds.created) == 1
    # The name with other inputs, or another member's: taken.
    with pytest.raises(ConflictError):
        await templates.create(ALICE, replace(request, ref="v1"))
    with pytest.raises(ConflictError):
        await templates.create(BOB, request)


async def test_git_calls_are_bounded_in_number(ctx: ServiceContext,
                                               repos: tuple[GitServer, dict[str, list[str]]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = repos
    monkeypatch.setattr(git_templates, "GIT_CONCURRENCY", 1)
    ctx.settings = ctx.settings.model_copy(update={"git_timeout_seconds": 3.0})
    templates, _ = service(ctx)
    slow = asyncio.create_task(templates.create(ALICE, GitTemplateRequest(name="s1", url=server.url("slow/a.git"))))
    await asyncio.sleep(0.2)
    # The next request's deadline ends while the slow one still holds the only slot.
    ctx.settings = ctx.settings.model_copy(update={"git_timeout_seconds": 0.5})
    with pytest.raises(GitResolveUnavailableError) as caught:
        await templates.create(ALICE, GitTemplateRequest(name="s2", url=server.url("app.git")))
    assert caught.value.details["transient"] is True and "too many" in caught.value.message
    with pytest.raises(GitResolveUnavailableError):
        await slow


async def test_git_uses_the_addresses_that_were_checked(ctx: ServiceContext,
                                                        repos: tuple[GitServer, dict[str, list[str]]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is looked up once, by the control plane; git connects to those addresses and
    never asks DNS again (a name no resolver knows still reaches the checked address)."""
    server, commits = repos
    looked_up: list[str] = []

    async def checked(url: Any, deadline: float) -> list[str]:
        looked_up.append(url.host)
        return ["127.0.0.1"]

    monkeypatch.setattr(git_templates, "host_addresses", checked)
    templates, builds = service(ctx)
    result = await templates.create(ALICE, GitTemplateRequest(
        name="pinned", url=f"http://git.nowhere.invalid:{server.port}/app.git"))
    assert looked_up == ["git.nowhere.invalid"]
    assert result.resolved_commit_sha == commits["app.git"][2] and builds.created


@pytest.mark.parametrize(("stderr", "error", "transient"), [
    ("fatal: could not read Username for 'https://h': terminal prompts disabled", RepoUnauthorizedError, None),
    ("fatal: unable to access 'https://h/r/': The requested URL returned error: 403", RepoUnauthorizedError, None),
    ("remote: Repository not found.\nfatal: repository 'https://h/r/' not found", RepoNotFoundError, None),
    ("fatal: unable to access 'https://h/r/': The requested URL returned error: 301", RepoNotFoundError, None),
    ("fatal: unable to access 'https://h/r/': The requested URL returned error: 502", GitResolveUnavailableError,
     True),
    ("fatal: unable to access 'https://h/r/': Failed to connect to h port 443: Connection refused",
     GitResolveUnavailableError, True),
    ("fatal: unable to access 'https://h/r/': SSL certificate problem: self-signed certificate",
     GitResolveUnavailableError, False),
])
def test_what_gits_failures_mean(stderr: str, error: type[QboxError], transient: bool | None) -> None:
    found = failure("warning: something first\n" + stderr + "\n", "https://h/r")
    assert type(found) is error
    assert found.details.get("transient") == transient
    assert "\n" not in found.message and len(found.message) < 500


async def test_no_git_on_the_control_plane_is_said_plainly(ctx: ServiceContext,
                                                           repos: tuple[GitServer, dict[str, list[str]]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = repos
    monkeypatch.setattr(git_remote, "git_environment",
                        lambda home, access: {**git_environment(home, access), "PATH": "/nonexistent"})
    caught = await errors_of(ctx, url=server.url("app.git"))
    assert isinstance(caught, GitResolveUnavailableError) and "not installed" in caught.message
    assert caught.details["transient"] is False
