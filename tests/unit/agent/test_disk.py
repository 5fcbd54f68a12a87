from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from qbox.agent import disk

OWNER = (100_000, 100_000)


class FakeMkfs:
    """Stands in for mkfs.ext4: writes a little data at both ends of the (sparse) image."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))
        image = Path(argv[-2])
        with open(image, "r+b") as handle:
            handle.write(b"superblock")
            handle.seek(image.stat().st_size - 4096)
            handle.write(b"tail" * 1024)


def test_mkfs_command_is_journal_less_lazy_and_owned_by_the_sandbox_root() -> None:
    argv = disk.mkfs_command(Path("/d/disk.img"), 2048, OWNER)
    assert argv[0] == "mkfs.ext4" and argv[-2:] == ["/d/disk.img", "2048M"]
    assert ["-O", "^has_journal"] == argv[argv.index("-O"):argv.index("-O") + 2]
    assert ["-m", "0"] == argv[argv.index("-m"):argv.index("-m") + 2]
    extended = argv[argv.index("-E") + 1]
    assert "lazy_itable_init=1" in extended and "root_owner=100000:100000" in extended


def test_make_image_creates_a_sparse_file_of_the_size(tmp_path: Path) -> None:
    mkfs = FakeMkfs()
    disk.make_image(tmp_path / "d.img", 64, OWNER, mkfs)
    stat = (tmp_path / "d.img").stat()
    assert stat.st_size == 64 * 1024 * 1024
    assert stat.st_blocks * 512 < 1024 * 1024
    with pytest.raises(ValueError):
        disk.make_image(tmp_path / "small.img", 8, OWNER, mkfs)


def test_copy_sparse_keeps_data_and_holes(tmp_path: Path) -> None:
    source = tmp_path / "src.img"
    with open(source, "wb") as handle:
        handle.truncate(32 * 1024 * 1024)
        handle.write(b"head")
        handle.seek(20 * 1024 * 1024)
        handle.write(b"middle" * 1000)
    disk.copy_sparse(source, tmp_path / "copy.img")
    copy = tmp_path / "copy.img"
    assert copy.read_bytes() == source.read_bytes()
    assert copy.stat().st_blocks <= source.stat().st_blocks
    with pytest.raises(FileExistsError):
        disk.copy_sparse(source, copy)  # never over an existing disk


def test_golden_images_are_made_once_and_cloned(tmp_path: Path) -> None:
    mkfs = FakeMkfs()
    goldens = disk.GoldenImages(tmp_path / "goldens", mkfs)
    goldens.clone(tmp_path / "a.img", 64, OWNER)
    goldens.clone(tmp_path / "b.img", 64, OWNER)
    assert len(mkfs.calls) == 1
    assert (tmp_path / "b.img").read_bytes() == goldens.path(64, OWNER).read_bytes()
    goldens.clone(tmp_path / "c.img", 128, OWNER)
    assert len(mkfs.calls) == 2


def test_beyond_the_golden_cap_each_disk_gets_its_own_mkfs(tmp_path: Path) -> None:
    mkfs = FakeMkfs()
    goldens = disk.GoldenImages(tmp_path / "goldens", mkfs, max_images=1)
    goldens.clone(tmp_path / "a.img", 64, OWNER)
    goldens.clone(tmp_path / "b.img", 128, OWNER)
    goldens.clone(tmp_path / "c.img", 128, OWNER)
    assert [call[-2] for call in mkfs.calls][1:] == [str(tmp_path / "b.img"),
                                                     str(tmp_path / "c.img")]
    assert len(os.listdir(tmp_path / "goldens")) == 1


def test_loop_config_matches_the_kernel_struct() -> None:
    assert ctypes.sizeof(disk.LoopConfig) == 304  # 4 + 4 + loop_info64 (232) + 8 * 8
    config = disk.loop_config(7, 4 | 16, "/data/sb/disk.img")
    assert config.fd == 7 and config.info.lo_flags == 20
    assert bytes(config.info.lo_file_name).rstrip(b"\0") == b"/data/sb/disk.img"
