from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from qbox.agent.images import ImageInfo, ImageStore, RegistryCredentials
from qbox.agent.settings import AgentSettings
from qbox.agent.images.store_tree import human_size
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

    assert lines[0] == f"pulling {REF}"
    assert any(line.startswith("downloading sha256:") for line in lines)
    assert re.fullmatch(r"layer 1/1 sha256:[0-9a-f]{12} \d+ B: downloaded", lines[2])
    assert re.fullmatch(r"pulled 1 layer, \d+ B downloaded in \d+\.\d s", lines[3])
    assert f"unpacking {info.digest}" in lines
    assert lines[-1].startswith(f"image {info.digest} stored as python (")


@pytest.mark.parametrize(
    "ref",
    ["", "Python:3", "-rf", "--src-creds=a:b", "dir:/tmp/x", "docker-daemon:python:3", "oci:relative/dir:tag",
     "docker:python"],
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


PASSWORD = "hunter2-very-secret"


async def test_bare_registry_ref_is_pulled_over_docker_transport(store: ImageStore, runner: FakeRunner) -> None:
    await store.import_image("python:3.12-slim", "python")

    assert runner.calls[0][-2:] == ["docker://python:3.12-slim", f"oci:{store.layout_dir}:python"]
    assert not any("tls-verify" in arg for arg in runner.calls[0])


@pytest.mark.parametrize(
    ("ref", "insecure"),
    [("127.0.0.1:5000/t/img:1", True), ("localhost:5000/img", True), ("registry.lan/img", True),
     ("registry.example/img", False), ("oci:/srv/x:y", False)],
)
async def test_tls_verification_is_off_only_for_loopback_and_listed_registries(
    tmp_path: Path, runner: FakeRunner, ref: str, insecure: bool
) -> None:
    if ref.startswith("oci:"):
        ref = f"oci:{tmp_path}:y"
    store = ImageStore(tmp_path / "images", runner=runner, insecure_registries=["registry.lan"])

    await store.import_image(ref, "img")

    assert ("--src-tls-verify=false" in runner.calls[0]) is insecure


async def test_insecure_registries_come_from_the_agent_settings(
    tmp_path: Path, runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QBOX_INSECURE_REGISTRIES", "reg.lan:5000,other")
    settings = AgentSettings.from_env(data_dir=tmp_path)
    store = ImageStore(tmp_path / "images", runner=runner,
                       insecure_registries=settings.insecure_registries)

    await store.import_image("reg.lan:5000/img", "a")
    await store.import_image("other:443/img", "b")
    await store.import_image("reg.lan:5001/img", "c")

    skopeo = [call for call in runner.calls if call[0] == "skopeo"]
    assert ["--src-tls-verify=false" in call for call in skopeo] == [True, True, False]


async def test_credentials_go_through_a_private_authfile_only(store: ImageStore, runner: FakeRunner) -> None:
    seen: dict[str, object] = {}
    real_skopeo = runner.handlers["skopeo"]

    def skopeo(argv: list[str]) -> Reply | None:
        path = Path(argv[argv.index("--src-authfile") + 1])
        seen["mode"] = path.stat().st_mode & 0o777
        seen["auths"] = json.loads(path.read_text())["auths"]
        seen["path"] = path
        return real_skopeo(argv)

    runner.handlers["skopeo"] = skopeo
    await store.import_image("127.0.0.1:5000/team/img:1", "img",
                             credentials=RegistryCredentials("bob", PASSWORD))

    assert seen["mode"] == 0o600
    assert list(seen["auths"]) == ["127.0.0.1:5000"]  # type: ignore[call-overload]
    assert not Path(str(seen["path"])).exists()
    assert all(PASSWORD not in arg for arg in runner.calls[0])
    assert list((store.root / "tmp").iterdir()) == []


async def test_a_failing_pull_never_shows_the_password(store: ImageStore, runner: FakeRunner) -> None:
    token = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    runner.handlers["skopeo"] = lambda argv: Reply(1, (
        f"Copying blob sha256:{'a' * 64} for bob:{PASSWORD}",
        'time="x" level=fatal msg="initializing source docker://127.0.0.1:5000/img: '
        f'unauthorized: authentication required ({PASSWORD} / {token})"',
    ))
    lines: list[str] = []

    with pytest.raises(ValidationError) as caught:
        await store.import_image("127.0.0.1:5000/img", "img", lines.append,
                                 credentials=RegistryCredentials("bob", PASSWORD))

    assert "unauthorized" in caught.value.message
    text = caught.value.message + "\n".join(lines) + repr(caught.value)
    assert PASSWORD not in text and token not in text
    assert list((store.root / "tmp").iterdir()) == []


async def test_second_import_reports_every_layer_present(store: ImageStore) -> None:
    await store.import_image(REF, "python")
    lines: list[str] = []

    info = await store.import_image(REF, "python", on_progress=lines.append)

    assert re.fullmatch(r"layer 1/1 sha256:[0-9a-f]{12} \d+ B: already present", lines[1])
    assert re.fullmatch(r"pulled 1 layer, 0 B downloaded in \d+\.\d s", lines[2])
    assert not any(line.startswith("downloading") for line in lines)
    assert f"{info.digest} is already unpacked" in lines


async def test_store_dirs_are_private(store: ImageStore) -> None:
    await store.import_image(REF, "python")

    for path in (store.root, *(store.root / sub for sub in ("oci", "rootfs", "layers", "images", "tmp"))):
        assert path.stat().st_mode & 0o777 == 0o700, path


async def test_base_image_lowers_and_kernels(store: ImageStore) -> None:
    info = await store.import_image(REF, "python")

    assert store.lower_dirs(info.digest) == [store.rootfs_path(info.digest)]
    assert store.kernels(info.digest) is None
    with pytest.raises(NotFoundError):
        store.lower_dirs("sha256:" + "1" * 64)


async def test_work_dirs_survive_an_import(store: ImageStore) -> None:
    work = store.work_dir()
    (work / "layer").mkdir()

    await store.import_image(REF, "python")

    assert work.parent == store.root / "tmp"
    assert (work / "layer").is_dir()
    assert work.stat().st_mode & 0o777 == 0o700


async def test_commit_refuses_a_layer_outside_the_store(store: ImageStore, tmp_path: Path) -> None:
    info = await store.import_image(REF, "python")
    with pytest.raises(ValueError):
        await store.commit("built", info.digest, tmp_path, env={}, working_dir=None, user=None, kernels=[])


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (999, "999 B"), (1200, "1.2 KB"),
                                            (1_234_567, "1.2 MB"), (5 * 10**9, "5.0 GB")])
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text
