"""The web dashboard: server-rendered pages (Jinja2 + htmx, xterm.js for the shell).

Pages use the same services as the API with the signed-in user's principal,
so a member sees exactly what the API would show them. ``install`` adds the
page routers, the page-shaped error handling and the security headers to
the control plane's app. docs/dashboard.md tells what each page does.
"""

from __future__ import annotations

from fastapi import FastAPI

from qbox.server.web import (
    admin_pages,
    assets,
    errors,
    hosts_pages,
    keys_pages,
    pages,
    preview_sign_in,
    sandbox_files,
    sandbox_list,
    sandbox_page,
    sandbox_terminal,
    templates_git_pages,
    templates_pages,
)
from qbox.server.web.headers import SecurityHeaders

# The list's routes come before a sandbox's page (``/sandboxes/{id}``), its tabs after it;
# the from-git form's before a template's page (``/templates/{id}``).
ROUTERS = [pages.router, assets.router, sandbox_list.router, sandbox_page.router, sandbox_files.router,
           sandbox_terminal.router, templates_git_pages.router, templates_pages.router, hosts_pages.router,
           keys_pages.router, admin_pages.router, preview_sign_in.router]


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app)
    app.add_middleware(SecurityHeaders)
