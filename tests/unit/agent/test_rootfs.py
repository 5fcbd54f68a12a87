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
    import os

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


def _two_lowers(tmp_path: Path) -> tuple[Path, Path]:
    import os
    import stat

    base, top = tmp_path / "base", tmp_path / "top"
    for rel, text in {"etc/gone": "base", "etc/kept": "base", "opaque/old": "base",
                      "over/file": "base"}.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # whiteout
    (top / "opaque").mkdir()
    os.setxattr(top / "opaque", "trusted.overlay.opaque", b"y")
    (top / "opaque" / "new").write_text("top")
    (top / "over").mkdir()
    (top / "over" / "file").write_text("top")
    return top, base


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts an overlay (root)")
@pytest.mark.parametrize("mapped", [False, True], ids=["plain", "idmapped"])
def test_overlay_of_two_lowers_applies_whiteouts_and_opaque_dirs(tmp_path: Path, mapped: bool) -> None:
    from qbox.agent.idmap import IdMapping
    from qbox.agent.rootfs import LayerOptions

    top, base = _two_lowers(tmp_path)
    fs = OverlayFilesystem()
    options = LayerOptions(mapping=IdMapping(400_000) if mapped else None)
    try:
        merged = fs.prepare(tmp_path / "sb", [top, base], {"etc/hostname": b"sb\n"}, options)
        assert fs.is_ready(tmp_path / "sb")
        assert sorted(os.listdir(merged / "etc")) == ["hostname", "kept"]
        assert os.listdir(merged / "opaque") == ["new"]
        assert (merged / "over" / "file").read_text() == "top"
        assert (merged / "etc" / "kept").read_text() == "base"
        expected_owner = 400_000 if mapped else 0
        assert (merged / "etc" / "kept").stat().st_uid == expected_owner
        (merged / "etc" / "kept").write_text("changed")
        assert (base / "etc" / "kept").read_text() == "base"  # lowers stay untouched
    finally:
        fs.release(tmp_path / "sb")
    assert not (tmp_path / "sb").exists()
