"""/v1/templates: read access (creating templates comes with image builds)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from qbox.server.http.deps import require, services_of
from qbox.server.http.schemas import template_wire
from qbox.server.services.keys import Principal

router = APIRouter(prefix="/v1/templates")


@router.get("")
async def list_templates(
    request: Request,
    service: str | None = Query(default=None),
    principal: Principal = require("templates:read"),
) -> list[dict[str, Any]]:
    return [template_wire(t) for t in await services_of(request).templates.find(service)]


@router.get("/{template_id}")
async def get_template(
    template_id: str, request: Request, principal: Principal = require("templates:read")
) -> dict[str, Any]:
    return template_wire(await services_of(request).templates.get(template_id))
