from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbox.agent.images import ImageInfo, ImageStore
from qbox.core.errors import InternalError, NotFoundError, ValidationError

from .fakes import FakeRunner, Reply, digest_for, image_runner

REF = "docker://registry.example/team/python:3.12"


@pytest.fixture
def runner() -> FakeRunner:
    return image_runner()


@pytest.fixture
def store(tmp_path: Path, runner: FakeRunner) -> ImageStore:
    return ImageStore(tmp_path / "images", runner=runner)


async def test_import_copies_into_the_shared_layout_and_unpacks(store: ImageStore, runner: FakeRunner) -> None:
    info = await store.import_image(REF, "python")

    assert info.digest == digest_for(store.layout_dir, "python")
    assert runner.tools() == ["skopeo copy", "umoci unpack"]
    assert runner.calls[0][-2:] == [REF, f"oci:{store.layout_dir}:python"]
    assert store.has(info.digest)
    rootfs = store.rootfs_path(info.digest)
    assert rootfs == store.root / "rootfs" / info.digest.removeprefix("sha256:") / "rootfs"
    assert (rootfs / "etc" / "passwd").read_text().startswith("user:x:1000")


async def test_size_is_the_stored_blobs(store: ImageStore) -> None:
    info = await store.import_image(REF, "python")

    manifest = json.loads((store.layout_dir / "blobs/sha256" / info.digest.removeprefix("sha256:")).read_text())
    expected = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    assert info == ImageInfo(info.digest, expected)
    assert store.info(info.digest) == info


async def test_second_import_does_not_unpack_again(store: ImageStore, runner: FakeRunner) -> None:
    first = await store.import_image(REF, "python")
    runner.calls.clear()

    second = await store.import_image(REF, "python")

    assert second == first
    assert runner.tools() == ["skopeo copy"]


async def test_same_image_under_two_names_shares_one_rootfs(store: ImageStore, runner: FakeRunner) -> None:
    a = await store.import_image(REF, "python")
    b = await store.import_image(REF, "python-copy")

    assert a.digest == b.digest
    assert runner.tools().count("umoci unpack") == 1
    assert len(list((store.root / "rootfs").iterdir())) == 1


async def test_progress_reports_each_step(store: ImageStore) -> None:
    lines: list[str] = []

    info = await store.import_image(REF, "python", on_progress=lines.append)

    assert lines[0] == f"copying {REF}…"
    assert any(line.startswith("skopeo: Copying blob sha256:") for line in lines)
    assert f"unpacking {info.digest}…" in lines
    assert lines[-1] == f"image python ready: {info.digest}"


@pytest.mark.parametrize(
    "ref", ["", "python:3", "-rf", "docker-daemon:python:3", "oci:relative/dir:tag", "docker:python"]
)
async def test_bad_refs_are_refused_before_any_tool_runs(store: ImageStore, runner: FakeRunner, ref: str) -> None:
    with pytest.raises(ValidationError):
        await store.import_image(ref, "python")
    assert runner.calls == []


async def test_missing_local_source_is_a_validation_error(
    store: ImageStore, runner: FakeRunner, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        await store.import_image(f"oci-archive:{tmp_path}/nope.tar", "python")
    assert runner.calls == []


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a:b", "x" * 129])
async def test_bad_names_are_refused(store: ImageStore, runner: FakeRunner, name: str) -> None:
    with pytest.raises(ValidationError):
        await store.import_image(REF, name)
    assert runner.calls == []


async def test_unreadable_source_is_a_validation_error_with_skopeo_message(
    store: ImageStore, runner: FakeRunner
) -> None:
    message = (
        'time="2026-01-01T00:00:00Z" level=fatal msg="initializing source '
        f'{REF}: reading manifest 3.12 in registry.example/team/python: manifest unknown"'
    )
    runner.handlers["skopeo"] = lambda argv: Reply(1, (message,))

    with pytest.raises(ValidationError) as caught:
        await store.import_image(REF, "python")

    assert "manifest unknown" in caught.value.message
    assert "level=fatal" not in caught.value.message


async def test_other_skopeo_failures_are_internal(store: ImageStore, runner: FakeRunner) -> None:
    runner.handlers["skopeo"] = lambda argv: Reply(1, ("writing blob: no space left on device",))

    with pytest.raises(InternalError, match="no space left on device"):
        await store.import_image(REF, "python")


async def test_failed_unpack_leaves_nothing_behind(store: ImageStore, runner: FakeRunner) -> None:
    runner.handlers["umoci"] = lambda argv: Reply(1, ("umoci: layer digest mismatch",))

    with pytest.raises(InternalError, match="layer digest mismatch"):
        await store.import_image(REF, "python")

    digest = digest_for(store.layout_dir, "python")
    assert not store.has(digest)
    assert list((store.root / "tmp").iterdir()) == []


async def test_leftovers_of_a_crashed_import_are_cleared(store: ImageStore) -> None:
    crashed = store.root / "tmp" / "unpack-0123-abcd" / "bundle" / "rootfs"
    crashed.mkdir(parents=True)

    await store.import_image(REF, "python")

    assert list((store.root / "tmp").iterdir()) == []


async def test_unknown_digest_is_not_found(store: ImageStore) -> None:
    digest = "sha256:" + "0" * 64
    assert not store.has(digest)
    with pytest.raises(NotFoundError):
        store.rootfs_path(digest)
    with pytest.raises(NotFoundError):
        store.info(digest)


@pytest.mark.parametrize("digest", ["sha256:../../etc", "sha512:" + "0" * 128, "0" * 64])
def test_malformed_digest_is_refused(store: ImageStore, digest: str) -> None:
    with pytest.raises(ValidationError):
        store.rootfs_path(digest)


async def test_config_exposes_the_image_runtime_settings(store: ImageStore) -> None:
    info = await store.import_image(REF, "python")

    config = store.config(info.digest)

    assert config.env == ("PATH=/usr/bin",)
    assert config.working_dir == "/home/user"
    assert config.user == ""


def test_store_path_with_a_colon_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ImageStore(tmp_path / "a:b")
