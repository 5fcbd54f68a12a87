"""Who a command runs as: a user name or uid resolved against the sandbox's own
/etc/passwd and /etc/group.

The files are read through ``openat2(RESOLVE_IN_ROOT)`` because the rootfs is
untrusted (see ``openat2.py``), and parsed defensively: odd lines are skipped,
sizes are capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qbox.agent.openat2 import RootDir
from qbox.core.errors import ValidationError

DEFAULT_USER = "user"
DEFAULT_UID = 1000
DEFAULT_HOME = "/home/user"
_MAX_DB_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: int
    gid: int
    home: str
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 6 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        if uid < 0 or gid < 0:
            continue
        entries.append(PasswdEntry(fields[0], uid, gid, fields[5] or "/"))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m for m in (fields[3] if len(fields) > 3 else "").split(",") if m)
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def _fallback(uid: int) -> UserInfo:
    # No entry in the image: still run as that uid, with a sensible HOME.
    if uid == 0:
        return UserInfo("root", 0, 0, "/root")
    if uid == DEFAULT_UID:
        return UserInfo(DEFAULT_USER, DEFAULT_UID, DEFAULT_UID, DEFAULT_HOME)
    return UserInfo(str(uid), uid, uid, "/")


def resolve(passwd: list[PasswdEntry], groups: list[GroupEntry], user: str | None) -> UserInfo:
    """Resolve ``user`` (a name, a numeric uid, or None for the sandbox user)."""
    entry: PasswdEntry | None
    if user is None or user == "":
        entry = next((e for e in passwd if e.name == DEFAULT_USER), None)
        entry = entry or next((e for e in passwd if e.uid == DEFAULT_UID), None)
        if entry is None:
            return _fallback(DEFAULT_UID)
    elif user.isdigit():
        uid = int(user)
        if uid > 0xFFFFFFFE:
            raise ValidationError.for_fields({"user": f"uid {user} is out of range"})
        entry = next((e for e in passwd if e.uid == uid), None)
        if entry is None:
            return _fallback(uid)
    else:
        entry = next((e for e in passwd if e.name == user), None)
        if entry is None and user in ("root", DEFAULT_USER):
            return _fallback(0 if user == "root" else DEFAULT_UID)
        if entry is None:
            raise ValidationError.for_fields(
                {"user": f"no user named {user!r} in the sandbox's /etc/passwd"})
    extra = tuple(sorted({g.gid for g in groups if entry.name in g.members} - {entry.gid}))
    return UserInfo(entry.name, entry.uid, entry.gid, entry.home, extra)


def resolve_in_rootfs(rootfs: Path, user: str | None) -> UserInfo:
    """Read the sandbox's user database (never leaving ``rootfs``) and resolve ``user``."""
    with RootDir(rootfs) as root:
        passwd = root.read_bytes("/etc/passwd", _MAX_DB_BYTES) or b""
        group = root.read_bytes("/etc/group", _MAX_DB_BYTES) or b""
    return resolve(parse_passwd(passwd.decode("utf-8", "replace")),
                   parse_group(group.decode("utf-8", "replace")), user)
