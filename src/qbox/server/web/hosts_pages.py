"""The Hosts page (admins): every host's load as bars, kept live, and drain/uncordon.

A row is the API's ``GET /v1/hosts`` item (``views.host``) with its figures
turned into bars: CPU, memory in use (with what the host's sandboxes have
reserved), disk, and sandboxes against the host's limit. The table's body
asks ``/hosts/rows`` again every few seconds. Draining and uncordoning go
through the same service and are audited under the same actions as the API's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.server.http import views
from qbox.server.http.deps import services_of
from qbox.server.web.access import Change, Page, Viewer
from qbox.server.web.render import is_htmx, render

router = APIRouter(include_in_schema=False)

READ = Page("hosts:read", admin=True)
# A bar this full shows in the warning colour.
HIGH_PERCENT = 90


@dataclass(frozen=True)
class Bar:
    """One gauge of a host: ``percent`` is None when the host has not reported that figure."""

    label: str
    percent: float | None
    text: str

    @property
    def width(self) -> int:
        return round(min(max(self.percent or 0.0, 0.0), 100.0))

    @property
    def high(self) -> bool:
        return self.percent is not None and self.percent >= HIGH_PERCENT


def _mb(value: int | float) -> str:
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def _share(used: int | float | None, total: int | float | None) -> float | None:
    if used is None or not total:
        return None
    return 100.0 * used / total


def bars(host: dict[str, Any]) -> list[Bar]:
    """The gauges of one host as the API shows it (``views.host``)."""
    cpu = host["cpuPercent"]
    vcpus = f"{host['usedVcpus']} of {host['totalVcpus']} vCPUs reserved" if host["totalVcpus"] else ""
    cpu_text = f"{cpu:.0f}% busy" if cpu is not None else "not reported"
    used, total, reserved = host["memoryUsedMb"], host["totalMemoryMb"], host["usedMemoryMb"]
    memory_text = f"{_mb(used)} of {_mb(total)} in use" if used is not None and total else "not reported"
    if total:
        memory_text += f"; {_mb(reserved)} reserved by sandboxes"
    disk_used, disk_total = host["diskUsedMb"], host["diskTotalMb"]
    disk_text = (f"{_mb(disk_used)} of {_mb(disk_total)} used" if disk_used is not None and disk_total
                 else "not reported")
    count, most = host["sandboxCount"], host["maxSandboxes"]
    sandboxes_text = f"{count} of {most}" if most else f"{count} (no limit reported)"
    return [
        Bar("CPU", cpu, "; ".join(t for t in (cpu_text, vcpus) if t)),
        Bar("Memory", _share(used, total), memory_text),
        Bar("Disk", _share(disk_used, disk_total), disk_text),
        Bar("Sandboxes", _share(count, most), sandboxes_text),
    ]


async def _rows(request: Request) -> list[dict[str, Any]]:
    hosts = [views.host(view) for view in await services_of(request).hosts.find()]
    return [{**host, "bars": bars(host)} for host in hosts]


@router.get("/hosts")
async def hosts_page(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return render(request, "hosts/index.html", viewer, hosts=await _rows(request))


@router.get("/hosts/rows")
async def host_rows(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return render(request, "hosts/_rows.html", viewer, hosts=await _rows(request))


async def _after_change(request: Request, viewer: Viewer) -> Response:
    if is_htmx(request):
        return await host_rows(request, viewer)
    return RedirectResponse("/hosts", status_code=303)


@router.post("/hosts/{host_id}/drain")
async def drain_host(host_id: str, request: Request, viewer: Viewer = Depends(
        Change("hosts:write", audit="host.drain", admin=True))) -> Response:
    await services_of(request).hosts.drain(host_id)
    return await _after_change(request, viewer)


@router.post("/hosts/{host_id}/uncordon")
async def uncordon_host(host_id: str, request: Request, viewer: Viewer = Depends(
        Change("hosts:write", audit="host.uncordon", admin=True))) -> Response:
    await services_of(request).hosts.uncordon(host_id)
    return await _after_change(request, viewer)
