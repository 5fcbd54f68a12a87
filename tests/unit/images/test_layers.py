from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from qbox.agent.images.layers import remove_device_nodes, tree_size, write_layer_tar

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and trusted.* xattrs need root")


def _members(tar_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_plain_tree_is_archived_with_stored_ids_and_links(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "conf").write_text("x=1\n")
    os.link(layer / "etc" / "conf", layer / "etc" / "conf.bak")
    (layer / "etc" / "link").symlink_to("conf")
    os.mkfifo(layer / "pipe")
    os.setxattr(layer / "etc" / "conf", "user.note", b"hello", follow_symlinks=False)

    result = write_layer_tar(layer, tmp_path / "layer.tar")

    members = _members(tmp_path / "layer.tar")
    assert list(members) == ["etc", "etc/conf", "etc/conf.bak", "etc/link", "pipe"]
    assert members["etc/conf.bak"].islnk() and members["etc/conf.bak"].linkname == "etc/conf"
    assert members["etc/link"].issym() and members["etc/link"].linkname == "conf"
    assert members["pipe"].isfifo()
    assert members["etc/conf"].uid == os.getuid() and members["etc/conf"].uname == ""
    assert members["etc/conf"].pax_headers["SCHILY.xattr.user.note"] == "hello"
    assert result.files == 4 and result.size_bytes == (tmp_path / "layer.tar").stat().st_size


def test_same_tree_gives_the_same_diff_id(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    for name in ("b", "a", "c/d"):
        (layer / name).parent.mkdir(parents=True, exist_ok=True)
        (layer / name).write_text(name)

    first = write_layer_tar(layer, tmp_path / "1.tar")
    second = write_layer_tar(layer, tmp_path / "2.tar")

    assert first.diff_id == second.diff_id
    assert first.diff_id.startswith("sha256:") and len(first.diff_id) == 71


@needs_root
def test_overlay_whiteouts_and_opaque_dirs_become_oci_markers(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    os.mknod(layer / "etc" / "gone", stat.S_IFCHR, os.makedev(0, 0))
    (layer / "cache").mkdir()
    os.setxattr(layer / "cache", "trusted.overlay.opaque", b"y")
    os.setxattr(layer / "etc", "trusted.overlay.origin", b"\x00\xfb")
    (layer / "cache" / "new").write_text("n")
    os.mknod(layer / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # not image content

    write_layer_tar(layer, tmp_path / "layer.tar")

    members = _members(tmp_path / "layer.tar")
    assert list(members) == ["cache", "cache/.wh..wh..opq", "cache/new", "etc", "etc/.wh.gone"]
    assert members["etc/.wh.gone"].isfile() and members["etc/.wh.gone"].size == 0
    assert not any(key.startswith("SCHILY.xattr.trusted.overlay") for m in members.values()
                   for key in m.pax_headers)


@needs_root
def test_device_nodes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "dev").mkdir(parents=True)
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mkfifo(root / "fifo")
    (root / "file").write_text("x")
    (root / "devlink").symlink_to("/dev/null")
    (root / "suid").write_text("x")
    os.chmod(root / "suid", 0o4755)

    assert remove_device_nodes(root) == 2

    assert sorted(os.listdir(root)) == ["dev", "devlink", "fifo", "file", "suid"]
    assert os.listdir(root / "dev") == []
    assert Path("/dev/null").exists()  # the symlink was not followed


@needs_root
def test_a_layer_keeps_its_whiteouts(tmp_path: Path) -> None:
    os.mknod(tmp_path / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))

    assert remove_device_nodes(tmp_path, keep_whiteouts=True) == 1

    assert os.listdir(tmp_path) == ["gone"]


def test_tree_size_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(b"x" * 100_000)
    alone = tree_size(tmp_path / "t")
    os.link(tmp_path / "t" / "a", tmp_path / "t" / "b")
    assert tree_size(tmp_path / "t") == alone >= 100_000
    assert tree_size(tmp_path / "missing") == 0
