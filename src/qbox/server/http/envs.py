"""/v1/sandboxes/{id}/envs: a sandbox's environment variables (WIRE_PROTOCOL.md §4.7).

Reading needs ``sandboxes:read`` with ``mask=true`` and ``sandboxes:execute``
without it (secret values are what a key that runs ``env`` in the sandbox sees
anyway); every change needs ``sandboxes:execute``. A change's audit entry
names the keys it touched, never a value.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from qbox.core import dotenv
from qbox.core.errors import ValidationError
from qbox.server.http.access import Bucket, allowed, require_scope
from qbox.server.http.auditing import describe
from qbox.server.http.body import read_body
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, raw_body, request_body
from qbox.server.services.envs import MAX_DOTENV_BYTES, MAX_USER_ENVS, EnvVar
from qbox.server.principal import Principal

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/envs")
# An audit entry lists at most this many keys (its detail is cut at 1000 characters anyway).
_KEYS_SHOWN = 40


class EnvsBody(BaseModel):
    """PATCH/PUT: ``envs`` to set; ``secret`` marks all of them (true) or those it names."""

    model_config = ConfigDict(extra="forbid")
    envs: dict[str, str]
    secret: bool | list[str] = False


class EnvKeysBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[str] = Field(max_length=MAX_USER_ENVS)


class EnvEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: str
    source: str
    secret: bool


class EnvList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    envs: list[EnvEntry]


class DotenvRejected(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line: int
    reason: str
    key: str | None = None


class DotenvApplied(BaseModel):
    model_config = ConfigDict(extra="forbid")
    applied: list[str]
    skipped: int
    rejected: list[DotenvRejected]


def _listed(envs: list[EnvVar]) -> dict[str, Any]:
    return {"envs": [{"key": e.key, "value": e.value, "source": e.source, "secret": e.secret}
                     for e in envs]}


def _describe_keys(request: Request, verb: str, keys: list[str]) -> None:
    shown = ",".join(sorted(keys)[:_KEYS_SHOWN])
    more = f" (+{len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
    describe(request, f"{verb} keys={shown}{more}")


@router.get("", responses=answers(200, EnvList))
async def list_envs(
    sandbox_id: str, request: Request, mask: bool = False,
    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS),
) -> dict[str, Any]:
    if not mask:
        require_scope(principal, "sandboxes:execute")
    return _listed(await services_of(request).envs.find(principal, sandbox_id, mask=mask))


@router.patch("", openapi_extra=request_body(EnvsBody), responses=answers(200, EnvList, 404, 409))
async def set_envs(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="env.set"),
) -> dict[str, Any]:
    body = await json_body(request, EnvsBody)
    _describe_keys(request, "set", list(body.envs))
    return _listed(await services_of(request).envs.upsert(principal, sandbox_id, body.envs,
                                                          body.secret))


@router.put("", openapi_extra=request_body(EnvsBody), responses=answers(200, EnvList, 404, 409))
async def replace_envs(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="env.replace"),
) -> dict[str, Any]:
    body = await json_body(request, EnvsBody)
    _describe_keys(request, "replace with", list(body.envs))
    return _listed(await services_of(request).envs.replace(principal, sandbox_id, body.envs,
                                                           body.secret))


@router.delete("", openapi_extra=request_body(EnvKeysBody),
               responses=answers(200, EnvList, 404, 409))
async def delete_envs(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="env.delete"),
) -> dict[str, Any]:
    body = await json_body(request, EnvKeysBody)
    _describe_keys(request, "delete", body.keys)
    return _listed(await services_of(request).envs.delete(principal, sandbox_id, body.keys))


@router.post("/upload", openapi_extra=raw_body("text/plain"),
             responses=answers(200, DotenvApplied, 404, 409, 413))
async def upload_dotenv(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="env.upload"),
) -> dict[str, Any]:
    raw = await read_body(request, MAX_DOTENV_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError.for_fields({"body": "a dotenv file must be UTF-8 text"}) from None
    parsed = dotenv.parse(text)
    _describe_keys(request, "upload", list(parsed.envs))
    result = await services_of(request).envs.upload(principal, sandbox_id, parsed)
    return {"applied": result.applied, "skipped": result.skipped,
            "rejected": [{"line": r.line, "reason": r.reason,
                          **({"key": r.key} if r.key is not None else {})}
                         for r in result.rejected]}
