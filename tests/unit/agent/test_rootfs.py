from __future__ import annotations

import os
from pathlib import Path

import pytest

from qbox.agent.rootfs import DirectoryFilesystem, OverlayFilesystem


def test_overlay_refuses_paths_that_would_be_read_as_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        OverlayFilesystem().prepare(tmp_path / "sb", Path("/images/a,upperdir=/etc"), {})


def test_directory_filesystem_seeds_and_removes(tmp_path: Path) -> None:
    fs = DirectoryFilesystem()
    rootfs = fs.prepare(tmp_path / "sb", tmp_path / "image", {"etc/hostname": b"x\n"})
    assert (rootfs / "etc" / "hostname").read_bytes() == b"x\n"
    assert fs.is_ready(tmp_path / "sb")
    fs.release(tmp_path / "sb")
    assert not (tmp_path / "sb").exists()
    fs.release(tmp_path / "sb")  # idempotent


def test_seed_files_and_the_directories_made_for_them_get_the_owner(tmp_path: Path) -> None:

    from qbox.agent.rootfs import write_seed
    owner = (os.getuid(), os.getgid()) if os.geteuid() else (101_000, 101_000)
    (tmp_path / "layer" / "etc").mkdir(parents=True)
    write_seed(tmp_path / "layer", {"etc/hostname": b"h\n", "var/lib/x/y": b"z"}, owner)
    for made in ("etc/hostname", "var", "var/lib", "var/lib/x", "var/lib/x/y"):
        stat = (tmp_path / "layer" / made).stat()
        assert (stat.st_uid, stat.st_gid) == owner, made


def test_unmount_below_a_directory_without_mounts_is_a_no_op(tmp_path: Path) -> None:
    from qbox.agent.rootfs import unmount_below
    unmount_below(tmp_path)


def test_overlay_checks_every_lower_dir(tmp_path: Path) -> None:
    good = tmp_path / "base"
    good.mkdir()
    with pytest.raises(ValueError):
        OverlayFilesystem().prepare(tmp_path / "sb", [Path("/layers/x:y"), good], {})
    with pytest.raises(ValueError):
        OverlayFilesystem().prepare(tmp_path / "sb", [], {})


def test_directory_filesystem_takes_a_list_of_lowers(tmp_path: Path) -> None:
    rootfs = DirectoryFilesystem().prepare(tmp_path / "sb", [tmp_path / "top", tmp_path / "base"],
                                           {"etc/hostname": b"x\n"})
    assert (rootfs / "etc" / "hostname").read_bytes() == b"x\n"
