"""Template builds on the agent (images/build.py) with the fake runtime and a fake store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox.agent.app import create_app
from qbox.agent.images import build_layer
from qbox.agent.images.build import BuildJob, step_label
from qbox.agent.images.refs import RegistryCredentials
from qbox.protocol.images import BuildRequest, BuildStep
from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.errors import InternalError, SandboxNotFoundError, ValidationError
from tests.unit.agent.fakes import FakeImageConfig, FakeImageInfo, FakeImageStore

PASSWORD = "hunter2-very-secret"


@dataclass
class Commit:
    name: str
    base: str
    files: dict[str, bytes]
    env: dict[str, str]
    working_dir: str | None
    user: str | None
    kernels: list[dict[str, str]]


class BuildStore(FakeImageStore):
    """The fake store plus what a build needs: commit keeps what the layer held."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.commits: list[Commit] = []
        self.gc_calls: list[tuple[set[str], set[str], float]] = []
        self.credentials: list[RegistryCredentials | None] = []
        self.pushed: list[tuple[str, str]] = []

    async def import_image(self, ref: str, name: str, on_progress: Any = None, *,
                           credentials: RegistryCredentials | None = None) -> FakeImageInfo:
        self.credentials.append(credentials)
        if on_progress is not None:
            on_progress(f"pulling {ref}")
        return await super().import_image(ref, name)

    def lower_dirs(self, digest: str) -> list[Path]:
        return [self.rootfs_path(digest)]

    def config(self, digest: str) -> FakeImageConfig:
        return FakeImageConfig(self.env)

    def kernels(self, digest: str) -> list[dict[str, str]] | None:
        return None

    def work_dir(self) -> Path:
        path = self.root / "tmp" / f"work-{len(self.commits)}"
        path.mkdir(parents=True)
        return path

    async def commit(self, name: str, base_digest: str, layer_dir: Path, *,
                     env: dict[str, str], working_dir: str | None, user: str | None,
                     kernels: list[dict[str, str]], on_progress: Any = None) -> FakeImageInfo:
        files = {str(p.relative_to(layer_dir)): p.read_bytes()
                 for p in layer_dir.rglob("*") if p.is_file()}
        files.update({str(p.relative_to(layer_dir)) + "/": b""
                      for p in layer_dir.rglob("*") if p.is_dir()})
        self.commits.append(Commit(name, base_digest, files, env, working_dir, user, kernels))
        digest = "sha256:" + hashlib.sha256(f"{base_digest}{len(self.commits)}".encode()).hexdigest()
        return FakeImageInfo(digest, 4321)

    async def push(self, digest: str, dest: str, on_progress: Any = None) -> str:
        self.pushed.append((digest, dest))
        return f"docker://{dest.rsplit(':', 1)[0]}@{digest}"

    async def gc(self, keep: set[str], in_use: set[str], *,
                 grace_seconds: float = 0.0) -> tuple[list[str], int]:
        self.gc_calls.append((keep, in_use, grace_seconds))
        return sorted({"sha256:" + "0" * 64} - keep - in_use), 99


def _manager(tmp_path: Path, store: BuildStore) -> SandboxManager:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="x", runtime="fake")
    return SandboxManager(settings, FakeRuntime(), store, DirectoryFilesystem())


@pytest.fixture
def store(tmp_path: Path) -> BuildStore:
    return BuildStore(tmp_path / "images")


@pytest.fixture
def manager(tmp_path: Path, store: BuildStore) -> SandboxManager:
    return _manager(tmp_path, store)


def _request(*steps: dict[str, Any], **extra: Any) -> BuildRequest:
    return BuildRequest.model_validate({"name": "demo", "ref": "oci:/images/base:1",
                                        "steps": list(steps), **extra})


async def _events(job: BuildJob) -> list[dict[str, Any]]:
    return [event async for event in job.events()]


def _lines(events: list[dict[str, Any]]) -> list[str]:
    return [e["line"] for e in events if e["type"] == "log"]


def _sandbox_dirs(tmp_path: Path) -> list[str]:
    directory = tmp_path / "data" / "sandboxes"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def test_steps_run_in_order_and_their_changes_become_the_layer(
        tmp_path: Path, store: BuildStore, manager: SandboxManager) -> None:
    request = _request(
        {"run": "echo one"},
        {"env": {"GREETING": "hello"}},
        {"workdir": "/app"},
        {"run": "echo $GREETING > made.txt; echo two; echo warn >&2"},
        {"copy": {"path": "/etc/motd", "content": "aGk=", "encoding": "base64", "mode": 0o600}},
        env={"BASE": "b"}, workdir=None)
    events = await _events(BuildJob(request, store, manager))

    lines = _lines(events)
    assert lines[0] == "pulling oci:/images/base:1"
    starts = [line for line in lines if line.startswith("step ") and ": exit code" not in line]
    assert starts == ["step 1/5: run (root): echo one", "step 2/5: env: GREETING",
                      "step 3/5: workdir: /app",
                      "step 4/5: run (root): echo $GREETING > made.txt; echo two; echo warn >&2",
                      "step 5/5: copy: /etc/motd"]
    assert lines.index("one") < lines.index("step 2/5: env: GREETING")
    assert {"two", "warn"} <= set(lines)
    assert any(line.startswith("step 4/5: exit code 0 (") for line in lines)

    result = events[-1]
    assert result["type"] == "result"
    assert result["baseDigest"] == store.add("oci:/images/base:1")
    assert result["sizeBytes"] == 4321 and result["pushedRef"] is None
    assert lines[-1] == f"template ready: {result['digest']}, 4.3 KB"

    [commit] = store.commits
    assert commit.name == "demo" and commit.base == result["baseDigest"]
    assert commit.env == {"BASE": "b", "GREETING": "hello"}
    assert commit.working_dir == "/app" and commit.user == "user"
    assert commit.files["app/made.txt"] == b"hello\n"
    assert commit.files["etc/motd"] == b"hi"
    # What qbox seeded at boot is not the image's.
    assert "etc/hostname" not in commit.files and "etc/hosts" not in commit.files
    assert "home/user/" not in commit.files and "home/" not in commit.files
    # The build sandbox is gone, its directory too.
    assert list(manager) == [] and _sandbox_dirs(tmp_path) == []


async def test_the_template_workdir_wins_over_workdir_steps(
        store: BuildStore, manager: SandboxManager) -> None:
    events = await _events(BuildJob(_request({"workdir": "/a"}, workdir="/srv"), store, manager))
    assert events[-1]["type"] == "result"
    assert store.commits[0].working_dir == "/srv"


async def test_a_failing_step_ends_the_build_with_its_output_last(
        tmp_path: Path, store: BuildStore, manager: SandboxManager) -> None:
    request = _request({"run": "echo before"},
                       {"run": "echo out; echo err >&2; exit 3"},
                       {"run": "echo never"})
    events = await _events(BuildJob(request, store, manager))

    error = events[-1]
    message = "step 2/3 (run: echo out; echo err >&2; exit 3) exited with code 3"
    assert error == {"type": "error", "code": "build_failed", "message": message, "step": 2}
    lines = _lines(events)
    assert lines[-1] == f"build failed: {message}"
    assert set(lines[-4:-2]) == {"out", "err"}
    assert lines[-2].startswith("step 2/3: exit code 3 (")
    assert "never" not in lines and not store.commits
    assert _sandbox_dirs(tmp_path) == []


async def test_a_long_command_is_shortened_in_the_failure() -> None:
    label = step_label(BuildStep.model_validate({"run": "x" * 200}))
    assert label == "run: " + "x" * 79 + "…"


async def test_without_steps_the_base_image_is_the_result(
        tmp_path: Path, store: BuildStore, manager: SandboxManager) -> None:
    events = await _events(BuildJob(_request(push="reg:5000/templates/demo:build-1"),
                                    store, manager))
    result = events[-1]
    base = store.add("oci:/images/base:1")
    assert result == {"type": "result", "digest": base, "sizeBytes": 1234, "kernels": [],
                      "baseDigest": base,
                      "pushedRef": f"docker://reg:5000/templates/demo@{base}"}
    assert store.pushed == [(base, "reg:5000/templates/demo:build-1")]
    assert not store.commits and _sandbox_dirs(tmp_path) == []


async def test_an_unreadable_ref_is_a_validation_error(
        store: BuildStore, manager: SandboxManager) -> None:
    events = await _events(BuildJob(_request(ref="nope"), store, manager))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "validation_error"


async def test_a_missing_template_user_fails_the_build(
        store: BuildStore, manager: SandboxManager) -> None:
    events = await _events(BuildJob(_request({"run": "true"}, user="alice"), store, manager))
    assert events[-1]["code"] == "build_failed"
    assert events[-1]["message"] == "user alice does not exist in the image"


async def test_credentials_reach_the_store_and_no_event(
        store: BuildStore, manager: SandboxManager) -> None:
    request = _request({"run": f"echo {PASSWORD}"},
                       credentials={"username": "bob", "password": PASSWORD})
    assert PASSWORD not in repr(request.credentials)
    assert PASSWORD not in str(request.model_dump()["credentials"])
    events = await _events(BuildJob(request, store, manager))
    assert store.credentials == [RegistryCredentials("bob", PASSWORD)]
    assert events[-1]["type"] == "result"
    assert PASSWORD not in json.dumps(events)


async def test_closing_the_stream_cancels_the_build_and_removes_its_sandbox(
        tmp_path: Path, store: BuildStore, manager: SandboxManager) -> None:
    job = BuildJob(_request({"run": "echo started; sleep 30"}), store, manager)
    events = job.events()
    async for event in events:
        if event.get("line") == "started":
            break
    # Running, and not listed: the control plane's reconciler would kill it.
    assert _sandbox_dirs(tmp_path) == [job.sandbox_id]
    assert manager.get(job.sandbox_id).params.build
    assert list(manager) == []
    await asyncio.wait_for(events.aclose(), 10)  # type: ignore[attr-defined]
    assert _sandbox_dirs(tmp_path) == [] and not store.commits
    with pytest.raises(SandboxNotFoundError):
        manager.get(job.sandbox_id)


async def test_a_restarted_agent_removes_a_leftover_build_sandbox(
        tmp_path: Path, store: BuildStore) -> None:
    first = _manager(tmp_path, store)
    digest = store.add("base")
    await first.create(SandboxParams("sb_buildleftover1", digest, build=True))
    await first.close()
    second = _manager(tmp_path, store)
    await second.load()
    assert list(second) == [] and _sandbox_dirs(tmp_path) == []


def test_clean_keeps_what_steps_changed_and_drops_untouched_seeds(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hostname").write_text("sb_x\n")
    (upper / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (upper / "home" / "user").mkdir(parents=True)
    (upper / "proc").mkdir()
    baseline = build_layer.snapshot(upper)
    # The steps: one seeded file rewritten, a new file in the seeded home, a new dir.
    (upper / "etc" / "hosts").write_text("10.0.0.1 db\n")
    (upper / "home" / "user" / ".profile").write_text("x")
    (upper / "data").mkdir()
    os.symlink("/etc/passwd", upper / "data" / "link")
    layer = tmp_path / "layer"
    shutil.copytree(upper, layer, symlinks=True)

    build_layer.clean(layer, upper, baseline, None)

    left = sorted(str(p.relative_to(layer)) for p in layer.rglob("*"))
    assert left == ["data", "data/link", "etc", "etc/hosts", "home", "home/user",
                    "home/user/.profile"]


@pytest.fixture
async def client(tmp_path: Path, store: BuildStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="s", runtime="fake",
                             prepare_host=False, import_dirs=("/images",))
    app = create_app(settings, runtime=FakeRuntime(), store=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://agent/internal/v1",
                                     headers={"Authorization": "Bearer s"}) as http:
            yield http


async def test_the_build_route_streams_ndjson(client: httpx.AsyncClient) -> None:
    body = {"name": "demo", "ref": "oci:/images/base:1", "steps": [{"run": "echo hi"}],
            "credentials": {"username": "u", "password": PASSWORD}}
    async with client.stream("POST", "/builds", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) async for line in response.aiter_lines() if line]
    assert "hi" in _lines(events) and events[-1]["type"] == "result"
    assert PASSWORD not in json.dumps(events)
    assert (await client.get("/sandboxes")).json() == []


async def test_the_build_route_needs_the_secret(client: httpx.AsyncClient) -> None:
    r = await client.post("/builds", json={"name": "d", "ref": "oci:/x:1"},
                          headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_a_step_with_two_actions_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/builds", json={"name": "d", "ref": "oci:/x:1",
                                           "steps": [{"run": "true", "env": {"A": "1"}}]})
    assert r.status_code in (400, 422)
    with pytest.raises(ValueError):
        BuildStep.model_validate({"env": {"A": "1"}, "user": "root"})


async def test_images_gc_passes_the_images_in_use(client: httpx.AsyncClient,
                                                  store: BuildStore) -> None:
    r = await client.post("/images/gc", json={"keep": ["sha256:" + "1" * 64]})
    assert r.status_code == 200
    assert r.json() == {"removed": ["sha256:" + "0" * 64], "freedBytes": 99}
    # No sandbox runs here; what a build stored moments ago is spared by the grace.
    assert store.gc_calls == [({"sha256:" + "1" * 64}, set(), 60.0)]


async def test_a_failed_push_fails_the_build(store: BuildStore, manager: SandboxManager) -> None:
    async def refuse(digest: str, dest: str, on_progress: Any = None) -> str:
        raise ValidationError("registry said no")

    store.push = refuse  # type: ignore[method-assign]
    events = await _events(BuildJob(_request(push="reg/templates/demo:build-1"), store, manager))
    assert events[-1] == {"type": "error", "code": "build_failed", "step": None,
                          "message": "push failed: registry said no"}


async def test_host_paths_of_the_agent_stay_out_of_the_log_and_the_error(
        store: BuildStore, manager: SandboxManager, tmp_path: Path) -> None:
    data_dir = tmp_path / "agent-data"

    async def unpack_fails(ref: str, name: str, on_progress: Any = None, **_: Any) -> Any:
        raise InternalError(f"umoci unpack failed: {data_dir}/images/tmp/unpack-1/bundle/rootfs: bad")

    store.import_image = unpack_fails  # type: ignore[method-assign]
    # A registry image (a local source's failure is one generic sentence: test_build_ref_policy).
    events = await _events(BuildJob(_request(ref="ghcr.io/team/base:1"), store, manager, data_dir=data_dir))
    assert events[-1]["type"] == "error"
    assert events[-1]["message"] == ("pull failed: umoci unpack failed: "
                                     "<agent data dir>/images/tmp/unpack-1/bundle/rootfs: bad")
    assert not any(str(data_dir) in json.dumps(event) for event in events)
