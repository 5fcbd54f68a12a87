"""Quota operations, written once for sync and async (see ``_steps``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from qbox.sdk._api import Api
from qbox.sdk._quota_models import QUOTA_FIELDS, QuotaDefaults, QuotaInfo
from qbox.sdk._steps import Op

DEFAULTS = "/v1/quota-defaults"


def _user_quota(user_id: str) -> str:
    return f"/v1/users/{quote(user_id, safe='')}/quota"


def quota_changes(limits: Mapping[str, int | None], reset: Iterable[str]) -> dict[str, Any]:
    """The PUT body: the limits given (``None`` ones left out) and ``null`` for each name in ``reset``."""
    if isinstance(reset, str):
        raise TypeError("reset must be a list of quota names, not one string")
    body: dict[str, Any] = {}
    for name in reset:
        if name not in QUOTA_FIELDS:
            raise ValueError(f"unknown quota {name!r}: one of {', '.join(QUOTA_FIELDS)}")
        body[QUOTA_FIELDS[name]] = None
    for name, value in limits.items():
        if value is not None:
            if QUOTA_FIELDS[name] in body:
                raise ValueError(f"quota {name!r} is both set and reset")
            body[QUOTA_FIELDS[name]] = value
    return body


def my_quota(api: Api) -> Op[QuotaInfo]:
    return QuotaInfo.from_wire((yield from api.get("/v1/quota")))


def get_quota(api: Api, user_id: str) -> Op[QuotaInfo]:
    return QuotaInfo.from_wire((yield from api.get(_user_quota(user_id))))


def set_quota(api: Api, user_id: str, changes: dict[str, Any]) -> Op[QuotaInfo]:
    return QuotaInfo.from_wire((yield from api.request("PUT", _user_quota(user_id), json=changes)))


def get_defaults(api: Api) -> Op[QuotaDefaults]:
    return QuotaDefaults.from_wire((yield from api.get(DEFAULTS)))


def set_defaults(api: Api, changes: dict[str, Any]) -> Op[QuotaDefaults]:
    return QuotaDefaults.from_wire((yield from api.request("PUT", DEFAULTS, json=changes)))
