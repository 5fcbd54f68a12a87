"""The web dashboard: server-rendered pages (Jinja2 + htmx, xterm.js for the shell).

Pages use the same services as the API with the signed-in user's principal,
so a member sees exactly what the API would show them. ``install`` adds the
page routers, the page-shaped error handling and the security headers to
the control plane's app. docs/dashboard.md tells what each page does.
"""

from __future__ import annotations

from fastapi import FastAPI

from qbox.server.web import assets, errors, pages
from qbox.server.web.headers import SecurityHeaders

# Each area's router (sandboxes, templates, hosts, keys, users, audit) is listed here.
ROUTERS = [pages.router, assets.router]


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app)
    app.add_middleware(SecurityHeaders)
