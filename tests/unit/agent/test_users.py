from __future__ import annotations

import os
from pathlib import Path

import pytest

from qbox.agent import users
from qbox.core.errors import ValidationError

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
bad:x:notanumber:1::/x:/bin/sh
user:x:1000:1000::/home/user:/bin/bash
alice:x:1001:1001::/home/alice:/bin/sh
"""
GROUP = """root:x:0:
sudo:x:27:user,alice
users:x:100:user
alice:x:1001:
"""


def _resolve(user: str | None, passwd: str = PASSWD, group: str = GROUP) -> users.UserInfo:
    return users.resolve(users.parse_passwd(passwd), users.parse_group(group), user)


def test_default_is_the_sandbox_user() -> None:
    info = _resolve(None)
    assert (info.name, info.uid, info.gid, info.home) == ("user", 1000, 1000, "/home/user")
    assert info.additional_gids == (27, 100)


def test_by_name_and_by_uid() -> None:
    assert _resolve("root") == users.UserInfo("root", 0, 0, "/root")
    assert _resolve("1001").name == "alice"
    assert _resolve("alice").additional_gids == (27,)


def test_odd_lines_are_skipped() -> None:
    assert [e.name for e in users.parse_passwd(PASSWD)] == ["root", "daemon", "user", "alice"]


def test_unknown_name_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        _resolve("mallory")
    assert "user" in info.value.field_errors


def test_unknown_uid_still_runs_as_that_uid() -> None:
    assert _resolve("4242") == users.UserInfo("4242", 4242, 4242, "/")


def test_image_without_uid_1000_falls_back_to_uid_1000_in_home_user() -> None:
    info = _resolve(None, passwd="root:x:0:0:root:/root:/bin/sh\n", group="")
    assert (info.uid, info.gid, info.home) == (1000, 1000, "/home/user")
    assert _resolve("root", passwd="", group="").uid == 0


def test_default_user_found_by_uid_when_named_differently() -> None:
    info = _resolve(None, passwd="ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n", group="")
    assert (info.name, info.home) == ("ubuntu", "/home/ubuntu")


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


def test_reads_the_sandbox_database(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    assert users.resolve_in_rootfs(root, "alice").uid == 1001


def test_absolute_symlink_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host-passwd"
    outside.write_text("evil:x:1000:0::/root:/bin/sh\n")
    root = _rootfs(tmp_path)
    os.symlink(str(outside), root / "etc" / "passwd")
    # Resolved inside the root, the link points at a path that does not exist there.
    info = users.resolve_in_rootfs(root, None)
    assert (info.name, info.gid) == ("user", 1000)


def test_dotdot_symlink_stays_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("evil:x:1000:0::/root:/bin/sh\n")
    root = _rootfs(tmp_path)
    os.symlink("../../../etc/passwd", root / "etc" / "passwd")
    assert users.resolve_in_rootfs(root, None).name == "user"


def test_a_fifo_in_place_of_passwd_does_not_hang(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    os.mkfifo(root / "etc" / "passwd")
    assert users.resolve_in_rootfs(root, None).uid == 1000
