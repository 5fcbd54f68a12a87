"""Host and join-token operations, written once for sync and async (see ``_steps``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from qbox.sdk._api import Api
from qbox.sdk._host_models import CreatedHostToken, Host, HostToken
from qbox.sdk._models import as_list
from qbox.sdk._steps import Op

HOSTS = "/v1/hosts"
HOST_TOKENS = "/v1/host-tokens"


def _path(collection: str, item_id: str, suffix: str = "") -> str:
    # Quoting keeps a stray "/" or ".." in an id from reaching another route.
    return f"{collection}/{quote(item_id, safe='')}{suffix}"


# --- hosts ------------------------------------------------------------------


def list_hosts(api: Api, *, status: str | None) -> Op[list[Host]]:
    # The API lists every host; the status filter is the client's.
    hosts = [Host.from_wire(row) for row in as_list((yield from api.get(HOSTS)), "the host list")]
    return hosts if status is None else [host for host in hosts if host.status == status]


def get_host(api: Api, host_id: str) -> Op[Host]:
    return Host.from_wire((yield from api.get(_path(HOSTS, host_id))))


def drain_host(api: Api, host_id: str) -> Op[Host]:
    return Host.from_wire((yield from api.post(_path(HOSTS, host_id, "/drain"))))


def uncordon_host(api: Api, host_id: str) -> Op[Host]:
    return Host.from_wire((yield from api.post(_path(HOSTS, host_id, "/uncordon"))))


def remove_host(api: Api, host_id: str) -> Op[None]:
    yield from api.delete(_path(HOSTS, host_id))


# --- join tokens ------------------------------------------------------------


def create_host_token(
    api: Api, *, ttl_seconds: int | None, labels: Mapping[str, str] | None
) -> Op[CreatedHostToken]:
    if labels is not None and not isinstance(labels, Mapping):
        raise TypeError("labels must be a mapping of names to values")
    body: dict[str, Any] = {}
    if ttl_seconds is not None:
        body["ttlSeconds"] = ttl_seconds
    if labels:
        body["labels"] = {str(k): str(v) for k, v in labels.items()}
    return CreatedHostToken.from_wire((yield from api.post(HOST_TOKENS, json=body)))


def list_host_tokens(api: Api) -> Op[list[HostToken]]:
    rows = as_list((yield from api.get(HOST_TOKENS)), "the host token list")
    return [HostToken.from_wire(row) for row in rows]


def revoke_host_token(api: Api, token_id: str) -> Op[None]:
    yield from api.delete(_path(HOST_TOKENS, token_id))
