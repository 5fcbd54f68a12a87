"""core/build_context.py: a context tar is refused whole when any member could leave it."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from qbox.core.build_context import EMPTY_CONTEXT, check_context, extract_context
from qbox.core.errors import ValidationError


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


GOOD = tar_of((member("app", tarfile.DIRTYPE), b""), (member("app/main.py"), b"print(1)\n"),
              (member("app/link", tarfile.SYMTYPE, "main.py"), b""),
              (member("app/up", tarfile.SYMTYPE, "../app/main.py"), b""),
              (member("hard", tarfile.LNKTYPE, "app/main.py"), b""))


def test_a_good_context_plain_and_gzipped(tmp_path: Path) -> None:
    assert check_context(GOOD) == 5
    assert check_context(gzip.compress(GOOD)) == 5
    archive = tmp_path / "c.tar"
    archive.write_bytes(gzip.compress(GOOD))
    extract_context(archive, tmp_path / "out")
    assert (tmp_path / "out/app/main.py").read_text() == "print(1)\n"
    assert (tmp_path / "out/app/link").is_symlink()


def test_the_empty_context() -> None:
    assert check_context(EMPTY_CONTEXT) == 0
    assert check_context(tar_of()) == 0


@pytest.mark.parametrize(("bad", "says"), [
    (member("/etc/passwd"), "absolute"),
    (member("a/../../x"), "'..'"),
    (member("..", tarfile.DIRTYPE), "'..'"),
    (member("dev", tarfile.CHRTYPE), "device"),
    (member("blk", tarfile.BLKTYPE), "device"),
    (member("fifo", tarfile.FIFOTYPE), "fifo"),
    (member("s", tarfile.SYMTYPE, "/etc/shadow"), "outside"),
    (member("d/s", tarfile.SYMTYPE, "../../etc"), "outside"),
    (member("h", tarfile.LNKTYPE, "../x"), "outside"),
    (member("h", tarfile.LNKTYPE, "/etc/passwd"), "outside"),
])
def test_members_that_leave_the_context_are_refused(bad: tarfile.TarInfo, says: str) -> None:
    data = tar_of((member("ok"), b"x"), (bad, b""))
    with pytest.raises(ValidationError) as caught:
        check_context(data)
    assert says in caught.value.message and caught.value.details == {"field": "buildContext"}


def test_entry_count_is_bounded() -> None:
    data = tar_of(*[(member(f"f{i}"), b"") for i in range(11)])
    assert check_context(data, max_entries=11) == 11
    with pytest.raises(ValidationError, match="more than 10 entries"):
        check_context(data, max_entries=10)


@pytest.mark.parametrize("data", [b"not a tar at all" * 100, gzip.compress(b"garbage" * 100),
                                  GOOD[:1100]])
def test_not_a_tar(data: bytes) -> None:
    with pytest.raises(ValidationError):
        check_context(data)
