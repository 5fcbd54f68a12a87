"""A sandbox's environment variables: listed by source, changed while it runs.

Three sources, later ones winning: the template's envs (its env steps, then
its ``env``), the user's (``Sandbox.envs``: the spawn's ``envs``, then this
API's changes) and the platform's (``QBOX_SANDBOX_ID``, ``QBOX_TEMPLATE_ID``:
set at spawn, and a name no user may set). A change is stored with the
sandbox and pushed to its host agent in one transaction, holding the
sandbox's row: the agent's refusal leaves the row as it was. The merged set
is the whole env of every command, shell and code context started
afterwards (the agent's ``PUT /sandboxes/{id}/envs``).

A key is secret when it was set with ``secret`` (``Sandbox.env_secrets``) or
its name says so (``is_secret_name``); ``mask`` replaces secret values with
``MASK`` for display. Values never go to the audit log or the logs: a
change's entry names its keys.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core import dotenv
from qbox.core.errors import SandboxNotFoundError, ValidationError
from qbox.core.json_input import printable
from qbox.core.states import SandboxState
from qbox.server.db.tables import Sandbox, Template
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import Change, LifecycleEvent, SandboxLifecycle, lock_row
from qbox.server.services.sandboxes import SandboxService, not_active
from qbox.server.services.templates import sandbox_env

log = logging.getLogger("qbox.envs")

TEMPLATE, USER, SYSTEM = "template", "user", "system"
MASK = "********"
# A sandbox's own envs: how many, and their keys and values together (UTF-8). Linux takes
# 128 KiB per string and about 2 MiB of args and env per exec.
MAX_USER_ENVS = 256
MAX_USER_ENV_BYTES = 256 * 1024
# A dotenv upload's body.
MAX_DOTENV_BYTES = 1024 * 1024
# Names that say their value is a secret: NAME, *_NAME; and anything with PASSWORD or SECRET.
_SECRET_SUFFIXES = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "PASS", "PWD",
                    "CREDENTIALS", "APIKEY")
_SECRET_RE = re.compile(rf"(?:^|_)(?:{'|'.join(_SECRET_SUFFIXES)})$|PASSWORD|SECRET")


def is_secret_name(key: str) -> bool:
    """Whether the name alone marks a secret (``GITHUB_TOKEN``, ``API_KEY``, ``DB_PASSWORD``)."""
    return _SECRET_RE.search(key.upper()) is not None


@dataclass(frozen=True)
class EnvVar:
    key: str
    value: str
    source: str
    secret: bool


@dataclass(frozen=True)
class Upload:
    applied: list[str]
    skipped: int
    rejected: list[dotenv.Rejection] = field(default_factory=list)


def resolve(template: Template | None, sandbox: Sandbox, *, mask: bool = False) -> list[EnvVar]:
    """Every env of the sandbox once, by key, with the source whose value wins."""
    secrets = set(sandbox.env_secrets or ())
    merged: dict[str, tuple[str, str]] = {}
    layers: list[tuple[str, Mapping[str, str]]] = [
        (TEMPLATE, sandbox_env(template) if template is not None else {}),
        (USER, sandbox.envs or {}),
        (SYSTEM, dotenv.system_envs(sandbox.id, sandbox.template_id))]
    for source, envs in layers:
        for key, value in envs.items():
            merged[key] = (str(value), source)
    found = []
    for key in sorted(merged):
        value, source = merged[key]
        secret = source != SYSTEM and (
            (source == USER and key in secrets) or is_secret_name(key))
        found.append(EnvVar(key, MASK if mask and secret else value, source, secret))
    return found


def _shown(key: str) -> str:
    return printable(key[:64])


def check_envs(envs: Mapping[str, str], field_name: str = "envs") -> None:
    """Every key a name a user may set, every value without NUL (the message never quotes values)."""
    problems = {f"{field_name}.{_shown(key)}": problem for key, value in envs.items()
                if (problem := dotenv.key_problem(key) or dotenv.value_problem(value))}
    if problems:
        raise ValidationError.for_fields(problems)


def check_size(envs: Mapping[str, str]) -> None:
    if len(envs) > MAX_USER_ENVS:
        raise ValidationError.for_fields(
            {"envs": f"a sandbox holds at most {MAX_USER_ENVS} envs of its own ({len(envs)} asked)"})
    size = sum(len(k.encode()) + len(v.encode()) for k, v in envs.items())
    if size > MAX_USER_ENV_BYTES:
        raise ValidationError.for_fields(
            {"envs": f"a sandbox's own envs total at most {MAX_USER_ENV_BYTES} bytes "
                     f"of keys and values ({size} asked)"})


def secret_keys(envs: Mapping[str, str], secret: bool | Collection[str]) -> set[str]:
    """The keys a request marks secret: all of its keys (True), none, or those it names."""
    if isinstance(secret, bool):
        return set(envs) if secret else set()
    strangers = [key for key in secret if key not in envs]
    if strangers:
        raise ValidationError.for_fields(
            {"secret": f"names keys the request does not set: {', '.join(map(_shown, strangers[:5]))}"})
    return set(secret)


# A change: the user's envs and secret keys before → after.
Edit = Callable[[dict[str, str], set[str]], tuple[dict[str, str], set[str]]]


class EnvService:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService,
                 lifecycle: SandboxLifecycle) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes
        self.lifecycle = lifecycle

    async def find(self, principal: Principal, sandbox_id: str, *, mask: bool) -> list[EnvVar]:
        """In any state: what the sandbox holds (or held) and its processes got."""
        sandbox = await self.sandboxes.get(principal, sandbox_id)
        return resolve(await self.sandboxes.template_of(sandbox), sandbox, mask=mask)

    async def upsert(self, principal: Principal, sandbox_id: str, envs: dict[str, str],
                     secret: bool | Collection[str] = False) -> list[EnvVar]:
        """Set ``envs``, leaving the other keys alone; a key marked secret stays secret when set
        again."""
        check_envs(envs)
        marked = secret_keys(envs, secret)

        def edit(current: dict[str, str], secrets: set[str]) -> tuple[dict[str, str], set[str]]:
            return {**current, **envs}, secrets | marked
        return await self._change(principal, sandbox_id, edit)

    async def replace(self, principal: Principal, sandbox_id: str, envs: dict[str, str],
                      secret: bool | Collection[str] = False) -> list[EnvVar]:
        """``envs`` become all of the user's envs (the template's stay); ``{}`` clears them."""
        check_envs(envs)
        marked = secret_keys(envs, secret)
        return await self._change(principal, sandbox_id, lambda _envs, _secrets: (dict(envs), marked))

    async def delete(self, principal: Principal, sandbox_id: str,
                     keys: Collection[str]) -> list[EnvVar]:
        """The user's envs of these keys go (a template's value shows again); unknown keys are
        fine."""
        gone = set(keys)

        def edit(current: dict[str, str], secrets: set[str]) -> tuple[dict[str, str], set[str]]:
            return {k: v for k, v in current.items() if k not in gone}, secrets - gone
        return await self._change(principal, sandbox_id, edit)

    async def upload(self, principal: Principal, sandbox_id: str, parsed: dotenv.Dotenv) -> Upload:
        """A dotenv file's envs (``dotenv.parse``) set as ``upsert`` would; the lines it could
        not read are reported."""
        if parsed.envs:
            await self.upsert(principal, sandbox_id, parsed.envs)
        else:
            await self.sandboxes.get(principal, sandbox_id)  # another's sandbox is still a 404
        return Upload(list(parsed.envs), parsed.skipped, parsed.rejected)

    async def _change(self, principal: Principal, sandbox_id: str, edit: Edit) -> list[EnvVar]:
        async with self.ctx.sessions() as session:
            sandbox = await self._locked_running(session, principal, sandbox_id)
            envs, secrets = edit(dict(sandbox.envs or {}), set(sandbox.env_secrets or ()))
            check_size(envs)
            sandbox.envs = envs
            sandbox.env_secrets = sorted(secrets & set(envs))
            template = await session.get(Template, sandbox.template_id)
            whole = {env.key: env.value for env in resolve(template, sandbox)}
            host_id = sandbox.host_id or ""
            try:
                await self.ctx.agents.for_host(host_id).sandboxes.set_envs(sandbox_id, whole)
            except SandboxNotFoundError:
                await session.rollback()
                await self._lost(sandbox_id, host_id)
                raise not_active(await self.sandboxes.get(principal, sandbox_id)) from None
            await session.commit()
            return resolve(template, sandbox, mask=True)

    async def _locked_running(self, session: AsyncSession, principal: Principal,
                              sandbox_id: str) -> Sandbox:
        """The principal's running sandbox, its row held until the session ends (an UPDATE
        that changes nothing: a row lock on PostgreSQL, the write lock on SQLite)."""
        sandbox = await self.sandboxes.get(principal, sandbox_id)  # 404 before any lock
        if sandbox.status != SandboxState.RUNNING:
            raise not_active(sandbox)
        await lock_row(session, sandbox_id)
        locked = await session.get(Sandbox, sandbox_id, populate_existing=True)
        if locked is None or locked.status != SandboxState.RUNNING:
            raise not_active(locked or sandbox)
        return locked

    async def _lost(self, sandbox_id: str, host_id: str) -> None:
        """The host no longer knows the sandbox: ended as host sync ends it."""
        await self.lifecycle.end(sandbox_id, Change.of(LifecycleEvent.MISSING_ON_HOST, host=host_id),
                                 remove_from_host=False)
