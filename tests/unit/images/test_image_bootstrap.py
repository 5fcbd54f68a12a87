from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from qbox.agent.images import bootstrap
from qbox.agent.images.apt_sources import AptSource
from qbox.agent.images.bootstrap import (
    build_rootfs,
    debootstrap_argv,
    mmdebstrap_argv,
    neutralise_identity,
    remove_tree,
    slim,
)
from qbox.agent.images.recipe import PYTHON_RECIPE
from qbox.core.errors import InternalError

from .fakes import FakeRunner, Reply, fake_mmdebstrap

SOURCES = [
    AptSource("http://mirror.corp.example/debian", "bookworm", ("main",)),
    AptSource("http://mirror.corp.example/debian-security", "bookworm-security", ("main",)),
]


def test_mmdebstrap_argv_uses_the_host_mirrors(tmp_path: Path) -> None:
    argv = mmdebstrap_argv(PYTHON_RECIPE, tmp_path / "rootfs", SOURCES)

    assert argv[0] == "mmdebstrap"
    assert "--mode=unshare" in argv
    assert "--variant=minbase" in argv
    assert f"--include={','.join(PYTHON_RECIPE.packages)}" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert argv[-4:] == [
        "bookworm",
        str(tmp_path / "rootfs"),
        "deb http://mirror.corp.example/debian bookworm main",
        "deb http://mirror.corp.example/debian-security bookworm-security main",
    ]


def test_mmdebstrap_argv_without_host_mirrors_leaves_the_default(tmp_path: Path) -> None:
    argv = mmdebstrap_argv(PYTHON_RECIPE, tmp_path / "rootfs", [])
    assert argv[-2:] == ["bookworm", str(tmp_path / "rootfs")]


def test_debootstrap_argv_uses_the_main_suite_mirror(tmp_path: Path) -> None:
    argv = debootstrap_argv(PYTHON_RECIPE, tmp_path / "r", list(reversed(SOURCES)))
    assert argv[0] == "debootstrap"
    assert argv[-3:] == ["bookworm", str(tmp_path / "r"), "http://mirror.corp.example/debian"]
    assert debootstrap_argv(PYTHON_RECIPE, tmp_path / "r", [])[-1] == "http://deb.debian.org/debian"


def _tree(root: Path) -> Path:
    for rel in ("etc", "dev", "tmp", "var/lib/apt/lists/partial", "var/cache/apt/archives"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("buildhost\n")
    (root / "etc/resolv.conf").write_text("nameserver 10.1.2.3\n")
    (root / "var/lib/apt/lists/lock").write_text("")
    (root / "var/lib/apt/lists/x_Packages").write_text("x")
    (root / "var/cache/apt/pkgcache.bin").write_text("x")
    (root / "var/cache/apt/archives/a.deb").write_text("x")
    (root / "dev/null").write_text("")
    (root / "tmp/leftover").mkdir()
    return root


def test_identity_files_name_nothing_of_the_build_host(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")
    old = os.umask(0o077)
    try:
        neutralise_identity(rootfs)
    finally:
        os.umask(old)

    assert (rootfs / "etc/hostname").read_text() == "localhost\n"
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert "127.0.0.1\tlocalhost" in (rootfs / "etc/hosts").read_text()
    for name in ("hostname", "hosts", "resolv.conf"):
        assert (rootfs / "etc" / name).stat().st_mode & 0o777 == 0o644


def test_identity_files_are_replaced_not_followed(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")
    outside = tmp_path / "host-resolv.conf"
    outside.write_text("nameserver 10.1.2.3\n")
    (rootfs / "etc/resolv.conf").unlink()
    (rootfs / "etc/resolv.conf").symlink_to(outside)

    neutralise_identity(rootfs)

    assert outside.read_text() == "nameserver 10.1.2.3\n"
    assert not (rootfs / "etc/resolv.conf").is_symlink()


def test_slim_drops_caches_and_keeps_apt_lock_files(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")

    slim(rootfs)

    assert sorted(p.name for p in (rootfs / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]
    assert not (rootfs / "var/cache/apt/pkgcache.bin").exists()
    assert list((rootfs / "var/cache/apt/archives").iterdir()) == []
    assert list((rootfs / "tmp").iterdir()) == []
    assert list((rootfs / "dev").iterdir()) == []


def test_slim_never_follows_a_symlink_out_of_the_rootfs(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    (host_tmp / "precious").write_text("keep me")
    (rootfs / "tmp/leftover").rmdir()
    (rootfs / "tmp").rmdir()
    (rootfs / "tmp").symlink_to(host_tmp)

    slim(rootfs)

    assert (host_tmp / "precious").read_text() == "keep me"


async def test_debootstrap_fallback_gets_the_full_sources_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/sbin/debootstrap" if tool == "debootstrap" else None)
    runner = FakeRunner(handlers={"debootstrap": fake_mmdebstrap()})
    lines: list[str] = []

    tool = await build_rootfs(PYTHON_RECIPE, tmp_path / "rootfs", [], runner, lines.append)

    assert tool == "debootstrap"
    assert runner.calls[0][0] == "debootstrap"
    assert [c[2] for c in runner.calls[1:]] == ["groupadd", "useradd"]
    assert (tmp_path / "rootfs/etc/apt/sources.list").read_text().splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert (tmp_path / "rootfs/etc/hostname").read_text() == "localhost\n"
    assert "debootstrap: running apt-get update..." in lines


async def test_no_bootstrap_tool_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(InternalError, match="neither mmdebstrap nor debootstrap"):
        await build_rootfs(PYTHON_RECIPE, tmp_path / "rootfs", [], FakeRunner(), lambda _: None)


async def test_failed_user_creation_is_internal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/mmdebstrap")
    runner = FakeRunner(handlers={"mmdebstrap": fake_mmdebstrap()})
    runner.handlers["chroot"] = lambda argv: Reply(4, ("useradd: UID 1000 is not unique",))

    with pytest.raises(InternalError, match="UID 1000 is not unique"):
        await build_rootfs(PYTHON_RECIPE, tmp_path / "rootfs", [], runner, lambda _: None)


def test_remove_tree_refuses_a_tree_with_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "build" / "rootfs"
    (tree / "proc").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"22 1 0:21 / / rw - ext4 /dev/vda rw\n88 22 0:42 / {tree / 'proc'} rw,nosuid - proc proc rw\n"
    )
    monkeypatch.setattr(bootstrap, "MOUNTINFO", mountinfo)

    with pytest.raises(InternalError, match="still mounted"):
        remove_tree(tmp_path / "build")
    assert (tree / "proc").is_dir()

    mountinfo.write_text("22 1 0:21 / / rw - ext4 /dev/vda rw\n")
    remove_tree(tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_mount_points_with_spaces_are_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "a b"
    (tree / "proc").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    escaped = str(tree / "proc").replace(" ", "\\040")
    mountinfo.write_text(f"88 22 0:42 / {escaped} rw - proc proc rw\n")
    monkeypatch.setattr(bootstrap, "MOUNTINFO", mountinfo)

    with pytest.raises(InternalError):
        remove_tree(tree)
