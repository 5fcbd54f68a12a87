"""The image store with the real skopeo, umoci and a local registry: layer sharing, commit, push, gc.

Images come from ``tests/oci_images.py`` (busybox in two layers, built in
milliseconds); every store, registry and mount lives in a temp dir and is
removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from qbox.agent.images import ImageStore, RegistryCredentials
from qbox.agent.images.runner import CommandResult, OutputCallback, SubprocessRunner
from qbox.agent.rootfs import OverlayFilesystem
from qbox.core.errors import ValidationError
from tests.oci_images import busybox_layout, multiarch_layout, oci_archive
from tests.registry import push, running_registry

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _root_and_tools() -> None:
    assert os.geteuid() == 0, "unpacking images needs root"
    missing = [t for t in ("umoci", "skopeo") if shutil.which(t) is None]
    assert not missing, f"missing tools (run make setup): {missing}"


class RecordingRunner(SubprocessRunner):
    """The real runner, keeping each argv so tests can see which tools ran."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def run(self, argv: Sequence[str], *, on_output: OutputCallback | None = None,
                  env: object = None) -> CommandResult:
        self.calls.append(list(argv))
        return await super().run(argv, on_output=on_output)

    def tools(self) -> list[str]:
        return [f"{call[0]} {call[1]}" for call in self.calls]


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def store(tmp_path: Path, runner: RecordingRunner) -> ImageStore:
    return ImageStore(tmp_path / "store", runner=runner)


@pytest.fixture
def busybox(tmp_path: Path) -> str:
    return busybox_layout(tmp_path / "src")


async def test_same_base_twice_downloads_and_unpacks_nothing(
    store: ImageStore, runner: RecordingRunner, busybox: str
) -> None:
    first_lines: list[str] = []
    first = await store.import_image(busybox, "busybox", first_lines.append)
    runner.calls.clear()
    lines: list[str] = []
    started = time.monotonic()

    second = await store.import_image(busybox, "busybox-again", lines.append)

    elapsed = time.monotonic() - started
    assert second == first
    assert [line.rsplit(": ", 1)[1] for line in first_lines if line.startswith("layer ")] == ["downloaded"] * 2
    assert [line.rsplit(": ", 1)[1] for line in lines if line.startswith("layer ")] == ["already present"] * 2
    assert any(line.startswith("pulled 2 layers, 0 B downloaded in ") for line in lines)
    assert f"{first.digest} is already unpacked" in lines
    assert runner.tools() == ["skopeo copy"]  # no umoci unpack
    assert elapsed < 2, elapsed
    rootfs = store.rootfs_path(first.digest)
    assert (rootfs / "bin" / "sh").is_symlink()
    assert "user:x:1000:1000" in (rootfs / "etc" / "passwd").read_text()
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o1777


async def test_archive_of_the_same_image_reuses_the_stored_layers(
    store: ImageStore, runner: RecordingRunner, busybox: str, tmp_path: Path
) -> None:
    info = await store.import_image(busybox, "busybox")
    archive = oci_archive(busybox, tmp_path / "busybox.tar")
    lines: list[str] = []

    again = await store.import_image(archive, "from-archive", lines.append)

    assert again.digest == info.digest
    assert sum("already present" in line for line in lines) == 2
    assert runner.tools().count("umoci unpack") == 1


async def test_bare_loopback_registry_ref_is_pulled_without_tls(
    store: ImageStore, busybox: str
) -> None:
    with running_registry() as registry:
        push(busybox, f"{registry}/test/busybox:1")
        lines: list[str] = []
        info = await store.import_image(f"{registry}/test/busybox:1", "busybox", lines.append)
        again: list[str] = []
        await store.import_image(f"{registry}/test/busybox:1", "busybox", again.append)

    assert lines[0] == f"pulling docker://{registry}/test/busybox:1"
    assert sum(line.endswith(": downloaded") for line in lines) == 2
    assert sum(line.endswith(": already present") for line in again) == 2
    assert store.has(info.digest)


async def test_commit_push_and_pull_back_a_built_image(
    store: ImageStore, busybox: str, tmp_path: Path
) -> None:
    base = await store.import_image(busybox, "busybox")
    layer = store.work_dir() / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "motd").write_text("built\n")
    os.mknod(layer / "etc" / "hostname", stat.S_IFCHR, os.makedev(0, 0))
    (layer / "home" / "user").mkdir(parents=True)
    os.chown(layer / "home" / "user", 1000, 1000)
    os.setxattr(layer / "home" / "user", "trusted.overlay.opaque", b"y")
    (layer / "home" / "user" / "notes").write_text("mine")
    os.chown(layer / "home" / "user" / "notes", 1000, 1000)
    lines: list[str] = []

    built = await store.commit("tpl-x", base.digest, layer, env={"FOO": "bar"}, working_dir="/home/user",
                               user="user", kernels=[{"name": "sh"}], on_progress=lines.append)

    assert lines == ["committing layer: 3 files, " + lines[0].split(", ")[1]]
    assert not layer.exists()
    lowers = store.lower_dirs(built.digest)
    assert lowers[1:] == [store.rootfs_path(base.digest)]
    assert (lowers[0] / "etc" / "motd").read_text() == "built\n"
    assert store.has(built.digest) and store.kernels(built.digest) == [{"name": "sh"}]
    config = store.config(built.digest)
    assert "FOO=bar" in config.env and any(e.startswith("PATH=") for e in config.env)
    assert (config.working_dir, config.user) == ("/home/user", "user")

    fs = OverlayFilesystem()
    try:
        merged = fs.prepare(tmp_path / "sb", lowers, {})
        assert (merged / "etc" / "motd").read_text() == "built\n"
        assert not (merged / "etc" / "hostname").exists()
        assert (merged / "bin" / "busybox").is_file()
    finally:
        fs.release(tmp_path / "sb")

    with running_registry() as registry:
        pushed = await store.push(built.digest, f"{registry}/templates/tpl-x:build-1", lines.append)
        assert pushed == f"docker://{registry}/templates/tpl-x@{built.digest}"
        assert lines[-1] == f"pushed {pushed}"
        other = ImageStore(tmp_path / "other")
        pulled = await other.import_image(pushed.removeprefix("docker://"), "tpl-x")

    assert pulled.digest == built.digest
    rootfs = other.rootfs_path(pulled.digest)
    assert (rootfs / "etc" / "motd").read_text() == "built\n"
    assert not (rootfs / "etc" / "hostname").exists()  # the whiteout, applied by umoci
    assert os.listdir(rootfs / "home" / "user") == ["notes"]
    assert (rootfs / "home" / "user" / "notes").stat().st_uid == 1000
    assert "FOO=bar" in other.config(pulled.digest).env


async def test_gc_keeps_what_is_kept_or_used_and_the_bases_below(store: ImageStore, busybox: str,
                                                                 tmp_path: Path) -> None:
    base = await store.import_image(busybox, "busybox")
    layer = store.work_dir() / "layer"
    layer.mkdir()
    (layer / "new").write_text("x" * 50_000)
    built = await store.commit("tpl-y", base.digest, layer, env={}, working_dir=None, user=None, kernels=[])
    other = await store.import_image(busybox_layout(tmp_path / "src2", "other"), "other")
    assert other.digest == base.digest  # the same content is the same image

    removed, freed = await store.gc(keep=set(), in_use={built.digest})
    assert removed == []
    assert store.has(built.digest) and store.has(base.digest)

    removed, freed = await store.gc(keep={base.digest}, in_use=set())
    assert removed == [built.digest]
    assert freed >= 50_000
    assert store.has(base.digest) and not store.has(built.digest)
    assert list((store.root / "layers").iterdir()) == []

    removed, freed = await store.gc(keep=set(), in_use=set())
    assert removed == [base.digest] and freed > 1_000_000
    assert list((store.layout_dir / "blobs" / "sha256").iterdir()) == []
    assert list((store.root / "rootfs").iterdir()) == []


async def test_gc_spares_what_was_imported_or_committed_within_the_grace(store: ImageStore, busybox: str) -> None:
    # A control plane computes `keep` from its records; a build may store an image after that.
    base = await store.import_image(busybox, "fresh")
    layer = store.work_dir() / "layer"
    layer.mkdir()
    (layer / "new").write_text("x")
    built = await store.commit("fresh-built", base.digest, layer, env={}, working_dir=None, user=None,
                               kernels=[])

    removed, _ = await store.gc(keep=set(), in_use=set(), grace_seconds=300)
    assert removed == []
    assert store.has(base.digest) and store.has(built.digest)

    removed, _ = await store.gc(keep=set(), in_use=set(), grace_seconds=0)
    assert removed == sorted([base.digest, built.digest])


class SlowUnpackRunner(RecordingRunner):
    """The real runner, with each ``umoci unpack`` taking ``delay`` seconds longer."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def run(self, argv: Sequence[str], *, on_output: OutputCallback | None = None,
                  env: object = None) -> CommandResult:
        if list(argv[:2]) == ["umoci", "unpack"]:
            await asyncio.sleep(self.delay)
        return await super().run(argv, on_output=on_output)


async def test_the_grace_counts_from_the_end_of_an_import(tmp_path: Path, busybox: str) -> None:
    # A Dockerfile build imports its image, then pushes it: an unpack slower than the grace
    # must not leave the image to a gc that runs in between (it did, once, under load).
    store = ImageStore(tmp_path / "slow-store", runner=SlowUnpackRunner(delay=1.5))
    image = await store.import_image(busybox, "slow")
    removed, _ = await store.gc(keep=set(), in_use=set(), grace_seconds=1.0)
    assert removed == [] and store.has(image.digest)


async def test_private_registry_with_credentials(store: ImageStore, busybox: str,
                                                 runner: RecordingRunner) -> None:
    password = "pa55-" + os.urandom(6).hex()
    with running_registry(login=("bob", password)) as registry:
        auth = store.root / "push-auth.json"
        store.root.mkdir(parents=True, exist_ok=True)
        auth.write_text(json.dumps({"auths": {registry: {"auth": base64.b64encode(
            f"bob:{password}".encode()).decode()}}}))
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-authfile", str(auth),
                        busybox, f"docker://{registry}/private/busybox:1"], check=True)
        auth.unlink()
        ref = f"{registry}/private/busybox:1"

        lines: list[str] = []
        with pytest.raises(ValidationError) as caught:
            await store.import_image(ref, "private", lines.append)
        assert "unauthorized" in caught.value.message or "authentication" in caught.value.message

        lines = []
        with pytest.raises(ValidationError) as caught:
            await store.import_image(ref, "private", lines.append,
                                     credentials=RegistryCredentials("bob", password + "-wrong"))
        assert password not in caught.value.message and password not in "\n".join(lines)

        lines = []
        info = await store.import_image(ref, "private", lines.append,
                                        credentials=RegistryCredentials("bob", password))

    assert store.has(info.digest)
    assert all(password not in line for line in lines)
    assert all(password not in arg for call in runner.calls for arg in call)
    assert not [p for p in (store.root / "tmp").iterdir() if p.name.startswith("auth-")]


async def test_an_image_index_pulls_the_hosts_platform(store: ImageStore, busybox: str, tmp_path: Path) -> None:
    lines: list[str] = []

    info = await store.import_image(multiarch_layout(tmp_path / "multi"), "multi", lines.append)

    assert info == await store.import_image(busybox, "busybox")
    assert sum(line.startswith("layer ") for line in lines) == 2
    assert not (store.rootfs_path(info.digest) / "decoy").exists()


async def test_gc_keeps_a_kept_image_whose_name_moved_on(store: ImageStore, busybox: str, tmp_path: Path) -> None:
    base = await store.import_image(busybox, "tpl")
    layer = store.work_dir() / "layer"
    layer.mkdir()
    (layer / "v1").write_text("1")
    v1 = await store.commit("tpl", base.digest, layer, env={}, working_dir=None, user=None, kernels=[])
    layer = store.work_dir() / "layer"
    layer.mkdir()
    (layer / "v2").write_text("2")
    v2 = await store.commit("tpl", base.digest, layer, env={}, working_dir=None, user=None, kernels=[])

    removed, _ = await store.gc(keep={v2.digest}, in_use={v1.digest})

    assert removed == []
    for digest in (v1.digest, v2.digest):
        assert store.has(digest) and store.info(digest).digest == digest
        assert store.config(digest).env


async def test_commit_drops_real_device_nodes_but_keeps_whiteouts(store: ImageStore, busybox: str) -> None:
    base = await store.import_image(busybox, "busybox")
    layer = store.work_dir() / "layer"
    (layer / "etc").mkdir(parents=True)
    os.mknod(layer / "etc" / "hostname", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(layer / "kmem", stat.S_IFCHR | 0o666, os.makedev(1, 2))

    built = await store.commit("tpl", base.digest, layer, env={}, working_dir=None, user=None, kernels=[])

    top = store.lower_dirs(built.digest)[0]
    assert sorted(os.listdir(top)) == ["etc"]
    assert os.listdir(top / "etc") == ["hostname"]
