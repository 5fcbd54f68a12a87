"""A signed-in dashboard user for the page tests, and reading what a page shows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.unit.server.conftest import Harness

PASSWORD = "correct horse battery staple"
ORIGIN = "http://testserver"


@dataclass
class WebClient:
    """One browser: its own cookies, its user's API key (to set things up through the API)."""

    client: TestClient
    csrf: str
    user_id: str
    key: str
    harness: Harness

    def get(self, path: str, *, htmx: bool = False, **kw: Any) -> httpx.Response:
        headers = {"HX-Request": "true"} if htmx else {}
        return self.client.get(path, headers={**headers, **kw.pop("headers", {})},
                               follow_redirects=kw.pop("follow_redirects", False), **kw)

    def send(self, method: str, path: str, *, htmx: bool = True, **kw: Any) -> httpx.Response:
        """A change as our own page sends it: same origin, the CSRF token (htmx's header)."""
        headers = {"Origin": ORIGIN, "X-CSRF-Token": self.csrf}
        if htmx:
            headers["HX-Request"] = "true"
        return self.client.request(method, path, headers={**headers, **kw.pop("headers", {})},
                                   follow_redirects=False, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.send("POST", path, **kw)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The same user through the API, with their key (no cookies)."""
        return self.harness.client.request(method, path, headers={"Authorization": f"Bearer {self.key}"}, **kw)


def new_browser(h: Harness) -> TestClient:
    """Another browser on the harness's app: its own cookies, the app's own event loop
    (a client of its own would run each request on a new loop, which the audit writer
    and the agent client are not on)."""
    client = TestClient(h.client.app, base_url=ORIGIN)
    client.portal = h.client.portal
    return client


def sign_in(h: Harness, email: str, *, role: str = "member") -> WebClient:
    """A user made through the API (with a password and a key), signed in through /login."""
    r = h.client.post("/v1/users", headers=h.auth(), json={"email": email, "role": role, "password": PASSWORD})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    key = _key_for(h, user_id)
    client = new_browser(h)
    r = client.post("/login", data={"email": email, "password": PASSWORD}, headers={"Origin": ORIGIN},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/login", follow_redirects=True)
    return WebClient(client, csrf_of(page.text) or client.cookies["qbox_csrf"], user_id, key, h)


def _key_for(h: Harness, user_id: str) -> str:
    """An API key of the user's own (every scope their role allows), made by the admin."""
    r = h.client.post("/v1/api-keys", headers=h.auth(),
                      json={"name": "tests", "scopes": ["*"], "userId": user_id})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def csrf_of(html: str) -> str | None:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    return found.group(1) if found else None


def text_of(html: str) -> str:
    """What a reader sees: the tags gone, whitespace folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()
