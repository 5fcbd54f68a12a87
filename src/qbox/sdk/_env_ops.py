"""A sandbox's environment variables, written once for sync and async (see ``_steps``).

Wire shapes (WIRE_PROTOCOL.md §4.7): ``GET …/envs[?mask=true]`` answers
``{"envs": [{key, value, source}]}``; PATCH (upsert) and PUT (replace the
user's envs) send ``{"envs": {K: V}}`` (qbox adds ``"secret"``); DELETE sends
``{"keys": [...]}``; ``POST …/envs/upload`` sends dotenv text as a raw body.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbox.sdk._api import Api, decode_response
from qbox.sdk._models import _int, _opt_str, _required, _str, as_list, as_object
from qbox.sdk._sandbox_ops import sandbox_path
from qbox.sdk._steps import Op

# What a secret value reads as in a masked listing.
MASK = "********"


@dataclass(frozen=True)
class EnvVar:
    """One env of a sandbox, as new processes get it, and where its value comes from:
    ``template``, ``user`` (the sandbox's own) or ``system`` (the platform's ``QBOX_*``)."""

    key: str
    value: str
    source: str = ""
    secret: bool = False

    @classmethod
    def from_wire(cls, value: Any) -> EnvVar:
        data = as_object(value, "an env var")
        return cls(key=_required(data, "key", "an env var"), value=_str(data, "value"),
                   source=_str(data, "source"), secret=data.get("secret") is True)


@dataclass(frozen=True)
class DotenvRejection:
    """A dotenv line that set nothing: its 1-based number, why, and its key if one was read."""

    line: int
    reason: str
    key: str | None = None


@dataclass(frozen=True)
class DotenvResult:
    applied: list[str] = field(default_factory=list)
    skipped: int = 0
    rejected: list[DotenvRejection] = field(default_factory=list)

    @classmethod
    def from_wire(cls, value: Any) -> DotenvResult:
        data = as_object(value or {}, "a dotenv upload's answer")
        rejected = []
        for row in as_list(data.get("rejected"), "rejected"):
            item = as_object(row, "a rejected line")
            rejected.append(DotenvRejection(line=_int(item, "line"), reason=_str(item, "reason"),
                                            key=_opt_str(item, "key")))
        return cls(applied=[str(k) for k in as_list(data.get("applied"), "applied")],
                   skipped=_int(data, "skipped"), rejected=rejected)


def _path(sandbox_id: str, suffix: str = "") -> str:
    return sandbox_path(sandbox_id, "/envs" + suffix)


def _envs_body(envs: Mapping[str, str], secret: bool | Iterable[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"envs": {str(k): str(v) for k, v in envs.items()}}
    if isinstance(secret, bool):
        if secret:
            body["secret"] = True
    elif not isinstance(secret, str):
        if keys := list(secret):
            body["secret"] = keys
    else:
        raise TypeError("secret is True/False or a list of keys, not a string")
    return body


def list_envs(api: Api, sandbox_id: str, mask: bool = False) -> Op[list[EnvVar]]:
    data = yield from api.get(_path(sandbox_id), params={"mask": True} if mask else None)
    return [EnvVar.from_wire(row) for row in as_list(as_object(data or {}, "the envs").get("envs"),
                                                      "envs")]


def set_envs(api: Api, sandbox_id: str, envs: Mapping[str, str],
             secret: bool | Iterable[str] = False, *, replace: bool = False) -> Op[None]:
    yield from api.request("PUT" if replace else "PATCH", _path(sandbox_id),
                           json=_envs_body(envs, secret))


def delete_envs(api: Api, sandbox_id: str, keys: Iterable[str]) -> Op[None]:
    yield from api.request("DELETE", _path(sandbox_id), json={"keys": list(keys)})


def dotenv_text(source: str | os.PathLike[str]) -> str:
    """A path's content, or the text itself. A ``str`` counts as a path only when it has no
    newline and no ``=`` (as the published client guesses); pass a ``Path`` to be sure."""
    if isinstance(source, os.PathLike) or ("\n" not in source and "=" not in source):
        return Path(source).read_text(encoding="utf-8")
    return source


def upload_dotenv(api: Api, sandbox_id: str, text: str) -> Op[DotenvResult]:
    request = api.build("POST", _path(sandbox_id, "/upload"), content=text.encode("utf-8"))
    response = yield from api.exchange(request, retry=False)
    return DotenvResult.from_wire(decode_response(response))
