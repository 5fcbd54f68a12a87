"""Hostile images against the agent's image store (real skopeo and umoci, as root).

A template's image is whatever its author pushed: its layers may aim tar
entries outside the unpack dir (``..``, absolute names, through symlinks and
hard links), ship device nodes and setuid-root binaries, or use whiteouts in
odd places. Whatever the import answers (a clean error or success), nothing
outside the store may change, no device node may reach the unpacked rootfs,
and no user of the host but root may reach the image's files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qbox.agent.images import ImageStore
from qbox.core.errors import InternalError, ValidationError
from tests.oci_images import HOSTILE_SETUID, hostile_layout, hostile_marker, hostile_tricks

pytestmark = pytest.mark.security

TRICKS = list(hostile_tricks("x", Path("/x")))
WATCHED_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group")


@dataclass
class Host:
    """What the image aims at on the host, and how it looked before the import."""

    canary_dir: Path
    store: ImageStore
    before: dict[str, tuple[int, str]]
    canary_listing: list[str]

    def snapshot(self) -> dict[str, tuple[int, str]]:
        out = {}
        for path in [*WATCHED_FILES, *(str(p) for p in self.canary_dir.iterdir())]:
            st = os.lstat(path)
            out[path] = (st.st_mtime_ns, hashlib.sha256(Path(path).read_bytes()).hexdigest())
        return out


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    assert os.geteuid() == 0, "unpacking images needs root"
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "canary.txt").write_text("original\n")
    store = ImageStore(tmp_path / "deep" / "er" / "store")
    probe = Host(canary, store, {}, [])
    probe.before = probe.snapshot()
    probe.canary_listing = sorted(os.listdir(canary))
    yield probe


def _escape_targets(host: Host, marker: str) -> list[Path]:
    """Every place a ``..``, absolute or symlinked entry of the image could have landed."""
    places = {Path("/"), Path("/tmp"), Path("/etc"), *host.store.root.parents, host.store.root,
              *(host.store.root / sub for sub in ("tmp", "rootfs", "oci", "layers", "images"))}
    names = [f"escape-{marker}", f"abs-escape-{marker}", f"pwned-{marker}", "qbox-pwned"]
    return [place / name for place in places for name in names]


async def _import(host: Host, ref: str) -> str | None:
    try:
        info = await host.store.import_image(ref, "hostile")
    except (ValidationError, InternalError) as exc:
        assert "Traceback" not in exc.message
        return None
    return info.digest


def _assert_host_unharmed(host: Host, marker: str) -> None:
    landed = [p for p in _escape_targets(host, marker) if os.path.lexists(p)]
    assert landed == []
    assert host.snapshot() == host.before
    assert sorted(os.listdir(host.canary_dir)) == host.canary_listing


def _assert_sanitised(host: Host, digest: str) -> None:
    rootfs = host.store.rootfs_path(digest)
    for directory, dirnames, filenames in os.walk(rootfs):
        for name in [*dirnames, *filenames]:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), os.path.join(directory, name)


def _reachable_by_nobody(path: Path) -> bool:
    done = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-e", str(path)], capture_output=True)
    return done.returncode == 0


async def test_the_whole_hostile_image_is_refused_or_contained(host: Host, tmp_path: Path) -> None:
    ref = hostile_layout(tmp_path / "src", host.canary_dir)

    digest = await _import(host, ref)

    _assert_host_unharmed(host, hostile_marker(tmp_path / "src"))
    if digest is not None:
        _assert_sanitised(host, digest)
    assert not [p for p in (host.store.root / "tmp").iterdir() if p.name.startswith("unpack-")]


@pytest.mark.parametrize("trick", TRICKS)
async def test_each_trick_is_refused_or_contained(host: Host, tmp_path: Path, trick: str) -> None:
    ref = hostile_layout(tmp_path / "src", host.canary_dir, [trick])

    digest = await _import(host, ref)

    marker = hostile_marker(tmp_path / "src")
    _assert_host_unharmed(host, marker)
    if digest is None:
        return
    _assert_sanitised(host, digest)
    rootfs = host.store.rootfs_path(digest)
    assert (rootfs / "etc" / "ok").read_text() == "fine\n"  # the harmless part made it
    if trick == "dotdot":
        assert (rootfs / f"escape-{marker}").is_file()  # clamped into the rootfs
    if trick == "absolute":
        assert (rootfs / f"abs-escape-{marker}").is_file()
    if trick == "symlink-root":
        assert (rootfs / "tmp" / f"pwned-{marker}").is_file()
    if trick == "canary":
        assert (rootfs / host.canary_dir.relative_to("/") / "planted").is_file()
    if trick == "devices":
        assert not os.path.lexists(rootfs / "dev-null") and not os.path.lexists(rootfs / "sub" / "kmem")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A dir every host user can traverse (pytest's tmp_path is root-only, which would hide the point)."""
    path = Path(tempfile.mkdtemp(prefix="qbox-hostile-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_setuid_files_in_images_are_out_of_reach_of_host_users(
    host: Host, tmp_path: Path, open_dir: Path
) -> None:
    store = ImageStore(open_dir / "store")
    info = await store.import_image(hostile_layout(tmp_path / "src", host.canary_dir, ["setuid"]), "hostile")

    setuid = store.rootfs_path(info.digest) / HOSTILE_SETUID
    assert setuid.stat().st_mode & stat.S_ISUID  # kept: images may need setuid binaries (sudo, ping)
    assert subprocess.run(["test", "-e", str(setuid)]).returncode == 0
    assert not _reachable_by_nobody(setuid)
    # The control: without the store's 0700 dirs, nobody would reach it.
    (open_dir / "control").write_text("x")
    assert _reachable_by_nobody(open_dir / "control")
    for path in (store.root, *(store.root / sub for sub in ("oci", "rootfs", "layers", "images", "tmp"))):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
