from __future__ import annotations

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
