"""/v1/audit: the audit log, newest first, and a check of its hash chain (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request

from qbox.core.errors import ValidationError
from qbox.core.timefmt import from_wire, to_wire
from qbox.server.db.tables import AuditEntry
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.deps import services_of
from qbox.server.http.openapi import answers
from qbox.server.http import response_models as rm
from qbox.server.services.audit import AuditQuery
from qbox.server.principal import Principal

router = APIRouter(prefix="/v1/audit")


def entry_wire(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "ts": to_wire(entry.ts),
        "actorId": entry.actor_id,
        "actorEmail": entry.actor_email,
        "apiKeyId": entry.api_key_id,
        "sourceIp": entry.source_ip,
        "action": entry.action,
        "targetId": entry.target_id,
        "outcome": entry.outcome,
        "detail": entry.detail,
        "hash": entry.hash,
    }


def _time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        # An unencoded "+" of an offset arrives as a space.
        return from_wire(value.replace(" ", "+"))
    except ValueError:
        raise ValidationError.for_fields({name: "not an ISO 8601 time"}) from None


@router.get("", responses=answers(200, rm.AuditPage))
async def list_audit(
    request: Request,
    since: str | None = Query(default=None, alias="from"),
    until: str | None = Query(default=None, alias="to"),
    actor_id: str | None = Query(default=None, alias="actorId"),
    action: str | None = Query(default=None),
    target_id: str | None = Query(default=None, alias="targetId"),
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None),
    principal: Principal = allowed("audit:read", Bucket.REQUESTS),
) -> dict[str, Any]:
    rows, next_cursor = await services_of(request).audit.query(AuditQuery(
        since=_time(since, "from"), until=_time(until, "to"), actor_id=actor_id, action=action,
        target_id=target_id, limit=limit, cursor=cursor))
    return {"data": [entry_wire(r) for r in rows], "nextCursor": next_cursor}


@router.get("/verify", responses=answers(200, rm.AuditVerification))
async def verify_audit(
    request: Request, principal: Principal = allowed("audit:read", Bucket.REQUESTS)
) -> dict[str, Any]:
    result = await services_of(request).audit.verify()
    return {"ok": result.ok, "checked": result.checked, "firstBadId": result.first_bad_id,
            "reason": result.reason}
