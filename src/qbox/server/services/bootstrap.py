"""First start: the admin user, its API key and password, and the embedded host."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from qbox.core.ids import new_id
from qbox.core.scopes import WILDCARD
from qbox.protocol.host import Health
from qbox.server.db.tables import Host, HostPlacement, User
from qbox.server.services.context import ServiceContext
from qbox.server.services.hosts import EMBEDDED, READY, record_report
from qbox.server.services.keys import create_key
from qbox.server.services.users import hash_password

ADMIN_EMAIL = "admin@localhost"


@dataclass(frozen=True)
class AdminBootstrap:
    created: bool
    key_file: Path
    password_file: Path
    # Only when just created: shown once.
    secret: str | None = None
    password: str | None = None


async def ensure_admin(ctx: ServiceContext) -> AdminBootstrap:
    """The database's first admin, its key and its dashboard password, created once whichever
    replica starts first.

    Replicas starting together on an empty database all find no admin; the unique
    ``users.email`` lets exactly one insert the first admin, and the others, refused,
    find it and create nothing (only the winner writes ``admin-key`` and ``admin-password``).
    """
    key_file = ctx.settings.data_dir / "admin-key"
    password_file = ctx.settings.data_dir / "admin-password"
    found = AdminBootstrap(created=False, key_file=key_file, password_file=password_file)
    if await _has_admin(ctx):
        return found
    password = secrets.token_urlsafe(18)
    try:
        async with ctx.sessions() as session:
            user = User(id=new_id("usr", 16), email=ADMIN_EMAIL, role="admin",
                        password_hash=hash_password(password))
            session.add(user)
            await session.flush()
            _key, secret = await create_key(session, user_id=user.id, name="admin (created at first start)",
                                            scopes=[WILDCARD])
            await session.commit()
    except IntegrityError:
        if await _has_admin(ctx):
            return found
        raise  # admin@localhost is taken by a user who is no longer an admin: not a race
    write_secret_file(key_file, secret + "\n")
    write_secret_file(password_file, password + "\n")
    return AdminBootstrap(created=True, key_file=key_file, password_file=password_file,
                          secret=secret, password=password)


async def _has_admin(ctx: ServiceContext) -> bool:
    async with ctx.sessions() as session:
        found = await session.execute(select(User.id).where(User.role == "admin").limit(1))
        return found.first() is not None


def write_secret_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.replace(tmp, path)


async def ensure_host(ctx: ServiceContext, host_id: str, hostname: str, address: str,
                      health: Health) -> Host:
    """The embedded agent's host row, with what it just reported (a restart keeps its id)."""
    async with ctx.sessions() as session:
        host = await session.get(Host, host_id)
        if host is None:
            host = Host(id=host_id, hostname=hostname, address=address, status=READY, kind=EMBEDDED)
            session.add(host)
            session.add(HostPlacement(host_id=host_id, placed=0))
        record_report(host, health)
        host.address = address
        host.status = READY
        host.kind = EMBEDDED
        host.removed_at = None
        host.last_seen_at = ctx.clock()
        await session.commit()
        return host
