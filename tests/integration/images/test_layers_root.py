"""Layer tars and image cleaning with what only root may make: device nodes, whiteouts
(0/0 char devices) and ``trusted.*`` xattrs (the rest is in tests/unit/images/test_layers.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from qbox.agent.images.layers import remove_device_nodes, write_layer_tar
from tests.unit.images.test_layers import _members


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


def test_a_layer_keeps_its_whiteouts(tmp_path: Path) -> None:
    os.mknod(tmp_path / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))

    assert remove_device_nodes(tmp_path, keep_whiteouts=True) == 1

    assert os.listdir(tmp_path) == ["gone"]
