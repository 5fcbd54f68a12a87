"""An overlay of several lower dirs, really mounted (root): whiteouts and opaque dirs of
the top layer apply, with and without an idmapped mount per lower."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qbox.agent.rootfs import OverlayFilesystem


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
