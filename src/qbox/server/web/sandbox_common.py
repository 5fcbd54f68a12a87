"""What every tab of a sandbox's page needs: the sandbox as the API shows it to the viewer."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from qbox.server.http import views
from qbox.server.http.deps import services_of
from qbox.server.web.access import Viewer

# The tabs of a sandbox's page, in order: (path suffix, label).
TABS = (("", "Overview"), ("/logs", "Logs"), ("/processes", "Processes"), ("/files", "Files"),
        ("/shell", "Shell"), ("/code", "Code"))


async def sandbox_of(request: Request, viewer: Viewer, sandbox_id: str) -> dict[str, Any]:
    """The sandbox's public body (``GET /v1/sandboxes/{id}``), or the same 404 another's id gets there."""
    services = services_of(request)
    sandbox = await services.sandboxes.get(viewer.principal, sandbox_id)
    return views.sandbox(sandbox, await services.sandboxes.template_of(sandbox))
