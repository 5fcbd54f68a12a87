"""agent/images/dockerfile_build.py with a recording runner, network and cgroup tree: what
buildah and skopeo are asked to do, what a build is confined by, and that it always cleans up."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from qbox.agent import cgroups
from qbox.agent.idmap import IdMapping
from qbox.agent.images import dockerfile_build
from qbox.agent.images.dockerfile_build import (
    BuildFailed,
    DockerfileBuilder,
    context_path,
    receive_context,
    storage_name,
)
from qbox.agent.images.refs import RegistryCredentials
from qbox.agent.images.runner import CommandResult, OutputCallback
from qbox.agent.network.base import Attachment
from qbox.core.errors import QboxError, ValidationError
from qbox.core.image_refs import ImageRefPolicy
from qbox.protocol.images import DockerfileBuild

SECRET = "pa55-w0rd-xyz"
REMOVED: list[str] = []


class Runner:
    def __init__(self, fail: str | None = None, output: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.output = output

    async def run(self, argv: Sequence[str], *, on_output: OutputCallback | None = None,
                  env: Mapping[str, str] | None = None) -> CommandResult:
        self.calls.append(list(argv))
        if on_output is not None:
            for line in self.output:
                on_output(line)
        if self.fail is not None and self.fail in argv:
            return CommandResult(2, "Error: building at STEP \"RUN false\": exit status 1")
        return CommandResult(0, "")


class Network:
    def __init__(self, netns: Path, resolv: Path) -> None:
        self.netns, self.resolv = netns, resolv
        self.attached: list[tuple[str, bool]] = []
        self.detached: list[str] = []

    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment:
        self.attached.append((sandbox_id, internet))
        return Attachment(sandbox_id, "10.213.0.2", self.netns, self.resolv, internet)

    async def detach(self, sandbox_id: str) -> None:
        self.detached.append(sandbox_id)


@pytest.fixture(autouse=True)
def buildah_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether buildah is on this machine does not matter here: the runner is a recording."""
    monkeypatch.setattr(dockerfile_build.shutil, "which", lambda name: f"/usr/bin/{name}")


@pytest.fixture
def cgroup_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A v1 tree: memory, cpu, pids hierarchies with their limit files."""
    root = tmp_path / "cgroup"
    for controller in ("memory", "cpu", "pids"):
        (root / controller).mkdir(parents=True)
    real_mkdir = Path.mkdir

    def mkdir_with_files(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        if root in self.parents and self.name.startswith("sb_build"):
            for name in ("memory.limit_in_bytes", "cpu.cfs_quota_us", "cpu.cfs_period_us", "pids.max"):
                (self / name).write_text("100000\n" if name == "cpu.cfs_period_us" else "max\n")

    monkeypatch.setattr(Path, "mkdir", mkdir_with_files)
    # Emptied and removed at the end of the build: recorded here (the files above stay).
    monkeypatch.setattr(cgroups, "remove_sandbox", lambda path, **kw: REMOVED.append(path) or True)
    REMOVED.clear()
    return root


def builder(tmp_path: Path, runner: Runner, network: Network, cgroup_root: Path, *,
            policy: ImageRefPolicy | None = None, mapping: IdMapping | None = IdMapping(),
            credentials: RegistryCredentials | None = None) -> tuple[DockerfileBuilder, list[str]]:
    lines: list[str] = []
    return DockerfileBuilder(
        data_dir=tmp_path / "data", build_id="sb_build0123456789abcdef01234567", runner=runner,
        network=network, mapping=mapping, cgroup_parent="/qbox", insecure=frozenset(),
        policy=policy, credentials=credentials, log_line=lines.append, cgroup_root=cgroup_root), lines


MULTI = "ARG B=reg.example.com/base:1\nFROM $B AS one\nFROM one\nCOPY --from=reg.example.com/tools:2 /t /t\n"


def request(text: str = MULTI, **extra: object) -> DockerfileBuild:
    return DockerfileBuild.model_validate({"dockerfile": text, "buildArgs": {"B": "reg.example.com/base:3"},
                                           **extra})


def test_storage_names_are_dockers_normal_form() -> None:
    assert storage_name("python:3") == "docker.io/library/python:3"
    assert storage_name("busybox") == "docker.io/library/busybox:latest"
    assert storage_name("org/app:1") == "docker.io/org/app:1"
    assert storage_name("index.docker.io/org/app:1") == "docker.io/org/app:1"
    assert storage_name("127.0.0.1:5000/test/bb:1") == "127.0.0.1:5000/test/bb:1"
    assert storage_name("reg.example.com:5000/x") == "reg.example.com:5000/x:latest"
    assert storage_name("docker://reg.example.com/x:2") == "reg.example.com/x:2"
    with pytest.raises(ValidationError):
        storage_name("oci:/srv/images/x:1")


def test_a_build_is_confined_and_cleaned_up(tmp_path: Path, cgroup_root: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 9.9.9.9\nnameserver 127.0.0.53\n")
    runner, network = Runner(output=["STEP 1/2: FROM", f"token {SECRET}"]), Network(tmp_path / "ns", resolv)
    build, lines = builder(tmp_path, runner, network, cgroup_root,
                           credentials=RegistryCredentials("robot", SECRET))
    ref = asyncio.run(build.build(request(allowInternetAccess=False, timeoutSeconds=60), 1024, 2))
    work = tmp_path / "data" / "dockerfile-builds" / build.build_id
    assert ref == f"oci:{work}/out:image"
    pulls = [c for c in runner.calls if c[:2] == ["skopeo", "copy"]]
    assert [c[-2] for c in pulls] == ["docker://reg.example.com/base:3", "docker://reg.example.com/tools:2"]
    assert all("--src-authfile" in c and SECRET not in " ".join(c) for c in pulls)
    assert pulls[0][-1] == f"containers-storage:[overlay@{work}/storage+{work}/run]reg.example.com/base:3"
    bud = next(c for c in runner.calls if "bud" in c)
    joined = bud[bud.index("sh") + 1:bud.index("--")]
    assert joined == [str(cgroup_root / c / "qbox" / build.build_id / "cgroup.procs")
                      for c in ("memory", "cpu", "pids")]
    after = bud[bud.index("--") + 1:]
    assert after[:3] == ["nsenter", f"--net={tmp_path / 'ns'}", "--"]
    for flag in ("--pull=never", "--isolation=oci", "--runtime=crun", "--userns-uid-map=0:100000:65536",
                 "--userns-gid-map=0:100000:65536", "--network=host", f"--cgroup-parent=/qbox/{build.build_id}/run",
                 "--dns=9.9.9.9"):
        assert flag in after, flag
    assert "--dns=127.0.0.53" not in after
    assert after[after.index("--build-arg") + 1] == "B=reg.example.com/base:3"
    assert network.attached == [(build.build_id, False)] and network.detached == [build.build_id]
    group = cgroup_root / "memory" / "qbox" / build.build_id
    assert (group / "memory.limit_in_bytes").read_text() == str(1024 * 1024 * 1024)
    assert (cgroup_root / "cpu" / "qbox" / build.build_id / "cpu.cfs_quota_us").read_text() == "200000"
    assert (cgroup_root / "pids" / "qbox" / build.build_id / "pids.max").read_text() == "4096"
    assert SECRET not in "\n".join(lines) and "token ***" in lines
    assert REMOVED == [f"/qbox/{build.build_id}"]
    asyncio.run(build.cleanup())
    assert not work.exists()


def test_a_failing_step_fails_the_build_and_still_detaches(tmp_path: Path, cgroup_root: Path) -> None:
    runner, network = Runner(fail="bud"), Network(tmp_path / "ns", tmp_path / "none")
    build, _ = builder(tmp_path, runner, network, cgroup_root)
    with pytest.raises(BuildFailed, match="exit status 1"):
        asyncio.run(build.build(request(), 512, 1))
    assert network.detached == [build.build_id] and REMOVED == [f"/qbox/{build.build_id}"]
    assert not any(c[:2] == ["buildah", f"--root={build.storage}"] and "push" in c for c in runner.calls)


def test_refused_before_anything_runs(tmp_path: Path, cgroup_root: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    runner, network = Runner(), Network(tmp_path / "ns", tmp_path / "none")
    policy = ImageRefPolicy.from_settings(None, None)
    build, _ = builder(tmp_path, runner, network, cgroup_root, policy=policy)
    for text in ("FROM 127.0.0.1:5000/x:1\n", "FROM oci:/srv/x:1\n", "FROM a\nCOPY --from=10.0.0.1/x /a /b\n"):
        with pytest.raises(ValidationError):
            asyncio.run(build.build(request(text), 512, 1))
    build, _ = builder(tmp_path, runner, network, cgroup_root, mapping=None)
    with pytest.raises(BuildFailed, match="user namespace"):
        asyncio.run(build.build(request(), 512, 1))
    monkeypatch.setattr(dockerfile_build.shutil, "which", lambda name: None)
    build, _ = builder(tmp_path, runner, network, cgroup_root)
    with pytest.raises(QboxError, match="buildah is not installed"):
        asyncio.run(build.build(request(), 512, 1))
    assert runner.calls == [] and network.attached == []


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_contexts_are_received_whole_and_checked(tmp_path: Path) -> None:
    data = b"a" * 1000
    digest = hashlib.sha256(data).hexdigest()
    size = asyncio.run(receive_context(tmp_path, "ctx_abcdef012345", digest, _chunks(data[:10], data[10:])))
    assert size == 1000 and context_path(tmp_path, "ctx_abcdef012345").read_bytes() == data
    with pytest.raises(ValidationError, match="sha256"):
        asyncio.run(receive_context(tmp_path, "ctx_other0123456", "0" * 64, _chunks(data)))
    assert not context_path(tmp_path, "ctx_other0123456").exists()
    assert [p.name for p in (tmp_path / "build-contexts").iterdir()] == ["ctx_abcdef012345.tar"]
    for bad in ("../x", "ctx_", "CTX_abcdefgh", "ctx_abc/def12345"):
        with pytest.raises(ValidationError):
            context_path(tmp_path, bad)


def test_on_cgroup_v2_buildah_sits_in_a_leaf_under_the_limits(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    real_mkdir = Path.mkdir

    def mkdir_with_files(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        for directory in (self, *self.parents):
            if directory.name.startswith("sb_build") and directory == self.parent:
                for name, value in (("memory.max", "max"), ("memory.swap.max", "max"),
                                    ("cpu.max", "max 100000"), ("pids.max", "max")):
                    (directory / name).write_text(value)

    monkeypatch.setattr(Path, "mkdir", mkdir_with_files)
    monkeypatch.setattr(cgroups, "remove_sandbox", lambda path, **kw: REMOVED.append(path) or True)
    runner, network = Runner(), Network(tmp_path / "ns", tmp_path / "none")
    build, _ = builder(tmp_path, runner, network, root)
    asyncio.run(build.build(request(), 256, 1))
    group = root / "qbox" / build.build_id
    assert (group / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (group / "memory.swap.max").read_text() == "0"
    assert (group / "cpu.max").read_text() == "100000 100000" and (group / "pids.max").read_text() == "4096"
    for directory in (root, root / "qbox", group):
        assert (directory / "cgroup.subtree_control").read_text() in ("+memory", "+cpu", "+pids")
    bud = next(c for c in runner.calls if "bud" in c)
    assert bud[bud.index("sh") + 1:bud.index("--")] == [str(group / "buildah" / "cgroup.procs")]
    assert f"--cgroup-parent=/qbox/{build.build_id}/run" in bud
