"""Users: the people behind API keys and dashboard logins.

Passwords are stored as Argon2id hashes. Disabling a user keeps their
history (sandboxes, audit entries) and revokes their keys and sessions.
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from qbox.core.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from qbox.core.ids import new_id
from qbox.core.scopes import ROLES
from qbox.server.db.tables import ApiKey, User, WebSession
from qbox.server.services.context import ServiceContext
from qbox.server.principal import Principal
from qbox.server.services.shells import ShellService

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD_LENGTH = 12
_hasher = PasswordHasher()
# Compared against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("qbox-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError.for_fields({"password": f"at least {MIN_PASSWORD_LENGTH} characters"})


class UserService:
    def __init__(self, ctx: ServiceContext, shells: ShellService) -> None:
        self.ctx = ctx
        self.shells = shells

    async def create(self, email: str, role: str, password: str | None) -> User:
        email = email.strip().lower()
        fields = {}
        if not EMAIL_RE.match(email):
            fields["email"] = "not an email address"
        if role not in ROLES:
            fields["role"] = f"must be one of {', '.join(ROLES)}"
        if fields:
            raise ValidationError.for_fields(fields)
        if password is not None:
            check_password(password)
        user = User(id=new_id("usr", 16), email=email, role=role,
                    password_hash=hash_password(password) if password else None,
                    created_at=self.ctx.clock())
        async with self.ctx.sessions() as session:
            session.add(user)
            try:
                await session.commit()
            except IntegrityError:
                raise ConflictError(f"a user with email {email} exists", details={"email": email}) from None
        return user

    async def find(self) -> list[User]:
        async with self.ctx.sessions() as session:
            return list((await session.execute(select(User).order_by(User.created_at))).scalars().all())

    async def get(self, principal: Principal, user_id: str) -> User:
        async with self.ctx.sessions() as session:
            user = await session.get(User, user_id)
        if user is None or (not principal.is_admin and user.id != principal.user_id):
            raise NotFoundError(f"user {user_id} not found", details={"userId": user_id})
        return user

    async def disable(self, principal: Principal, user_id: str) -> User:
        user = await self.get(principal, user_id)
        if user.id == principal.user_id:
            raise ValidationError.for_fields({"userId": "you cannot disable yourself"})
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            if user.role == "admin":
                admins = await session.scalar(
                    select(func.count()).select_from(User).where(User.role == "admin", User.disabled_at.is_(None)))
                if (admins or 0) <= 1:
                    raise ConflictError("the last active admin cannot be disabled")
            await session.execute(update(User).where(User.id == user_id, User.disabled_at.is_(None))
                                  .values(disabled_at=now))
            await session.execute(update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
                                  .values(revoked_at=now))
            await session.execute(update(WebSession).where(WebSession.user_id == user_id,
                                                           WebSession.revoked_at.is_(None))
                                  .values(revoked_at=now))
            await session.commit()
        self.shells.close_for_user(user_id)
        return await self.get(principal, user_id)

    async def set_password(self, principal: Principal, user_id: str, password: str) -> None:
        if user_id != principal.user_id and not principal.is_admin:
            raise PermissionDeniedError("only admins set other users' passwords")
        await self.get(principal, user_id)
        check_password(password)
        async with self.ctx.sessions() as session:
            await session.execute(update(User).where(User.id == user_id)
                                  .values(password_hash=hash_password(password)))
            await session.commit()

    async def authenticate(self, email: str, password: str) -> User | None:
        async with self.ctx.sessions() as session:
            user = (await session.execute(select(User).where(User.email == email.strip().lower()))).scalars().first()
        ok = password_matches(user.password_hash if user else None, password)
        if user is None or not ok or user.disabled_at is not None:
            return None
        return user
