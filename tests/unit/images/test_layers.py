from __future__ import annotations

import os
import tarfile
from pathlib import Path


from qbox.agent.images.layers import tree_size, write_layer_tar

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


def test_tree_size_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(b"x" * 100_000)
    alone = tree_size(tmp_path / "t")
    os.link(tmp_path / "t" / "a", tmp_path / "t" / "b")
    assert tree_size(tmp_path / "t") == alone >= 100_000
    assert tree_size(tmp_path / "missing") == 0
