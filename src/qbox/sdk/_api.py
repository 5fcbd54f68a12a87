"""The one request/response layer of the SDK, shared by sync and async.

``Api.request`` is a generator (see ``_steps``): it builds the request,
yields it to a driver, decodes the answer, turns error bodies into the typed
errors of ``qbox.core.errors`` (by code, through ``error_codes.error_from_wire``) and
retries what is worth retrying:

* errors the server marks transient (``details.transient``) or whose code is
  transient by nature (429 ``rate_limited``, ``host_no_capacity``, ...),
  honouring ``Retry-After`` (capped) or else backing off exponentially;
* connection failures where the request never left (``details.transient``
  set by the transport), and any transport failure of an idempotent method.

A bare 503 or 500 is not retried: the server says when waiting helps.
"""

from __future__ import annotations

import json as jsonlib
import random
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from qbox._version import __version__
from qbox.core.error_codes import error_from_wire
from qbox.core.errors import AuthenticationError, QboxError, TransportError
from qbox.core.timefmt import utcnow
from qbox.sdk._config import API_KEY_PREFIX, ConnectionConfig
from qbox.sdk._steps import Body, HttpRequest, HttpResponse, Op, Open, Send, Sleep

USER_AGENT = f"qbox-python/{__version__}"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
RETRY_AFTER_MAX = 30.0

ParamValue = str | int | float | bool | None


def encode_params(params: Mapping[str, ParamValue] | None) -> dict[str, str]:
    """Query values as the wire wants them: lowercase booleans, decimal numbers, ``None`` dropped."""
    encoded: dict[str, str] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            encoded[name] = "true" if value else "false"
        else:
            encoded[name] = str(value)
    return encoded


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds())


def raise_for_status(response: HttpResponse) -> None:
    """Raise the typed error of a non-2xx reply (its body decoded as the error envelope)."""
    if 200 <= response.status < 300:
        return
    body: Any = None
    if response.content:
        try:
            body = jsonlib.loads(response.content)
        except ValueError:
            body = response.content.decode("utf-8", "replace").strip()[:500]
    raise error_from_wire(
        response.status,
        body,
        request_id=response.header("x-request-id"),
        retry_after=parse_retry_after(response.header("retry-after")),
    )


def decode_response(response: HttpResponse) -> Any:
    """The JSON of a 2xx (``None`` when empty), or raise the typed error of any other status."""
    raise_for_status(response)
    if response.status == 204 or not response.content.strip():
        return None
    try:
        return jsonlib.loads(response.content)
    except ValueError:
        raise QboxError(
            "the server answered with something that is not JSON",
            code="bad_response",
            status=response.status,
            request_id=response.header("x-request-id"),
        ) from None


def should_retry(error: QboxError, method: str) -> bool:
    if error.transient:
        return True
    return isinstance(error, TransportError) and method in IDEMPOTENT_METHODS


def retry_delay(error: QboxError, attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``."""
    hint = error.retry_after
    seconds_hint = error.details.get("retryAfterSeconds")
    if hint is None and isinstance(seconds_hint, int | float):
        hint = float(seconds_hint)
    if hint is not None:
        return min(max(hint, 0.0), RETRY_AFTER_MAX)
    base = min(BACKOFF_BASE * 2.0 ** (attempt - 1), BACKOFF_MAX)
    return base * (0.75 + 0.5 * random.random())


class Api:
    """Builds, sends (by yielding), decodes and retries requests for one resolved config."""

    def __init__(self, config: ConnectionConfig) -> None:
        if config.base_url is None or config.request_timeout is None or config.max_retries is None:
            raise ValueError("Api needs a resolved ConnectionConfig (see _config.resolve)")
        self.config = config
        self.base_url: str = config.base_url
        self.request_timeout: float = config.request_timeout
        self.max_retries: int = config.max_retries

    def _auth_headers(self, required: bool) -> dict[str, str]:
        key = self.config.api_key
        if key and key.startswith(API_KEY_PREFIX):
            return {"Authorization": f"Bearer {key}"}
        if not required:
            return {}
        if not key:
            raise AuthenticationError(
                "no API key: pass api_key=... or set QBOX_API_KEY",
                details={"reason": "missing_api_key"},
                status=0,  # decided here; no request was sent
            )
        raise AuthenticationError(
            f"malformed API key: qbox keys start with {API_KEY_PREFIX!r}",
            details={"reason": "malformed_api_key"},
            status=0,
        )

    def build(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
        content: Body | None = None,
        timeout: float | None = None,
        auth: bool = True,
    ) -> HttpRequest:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        headers.update(self._auth_headers(auth))
        return HttpRequest(
            method=method,
            url=self.base_url + path,
            headers=headers,
            params=encode_params(params),
            json=json,
            content=content,
            timeout=timeout if timeout is not None else self.request_timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
        timeout: float | None = None,
        auth: bool = True,
    ) -> Op[Any]:
        request = self.build(method, path, params=params, json=json, timeout=timeout, auth=auth)
        return decode_response((yield from self.exchange(request)))

    def exchange(self, request: HttpRequest, *, retry: bool = True) -> Op[HttpResponse]:
        """Send ``request`` until it earns a 2xx, retrying what is worth it (unless ``retry`` is off)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = yield from Send(request)
                raise_for_status(response)
                return response
            except QboxError as error:
                if not retry or attempt > self.max_retries or not should_retry(error, request.method):
                    raise
                yield from Sleep(retry_delay(error, attempt))

    def open(self, request: HttpRequest) -> Op[HttpResponse]:
        """Send ``request`` once and leave a 2xx body unread in ``response.stream``."""
        response = yield from Open(request)
        raise_for_status(response)
        return response

    def get(self, path: str, **kwargs: Any) -> Op[Any]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Op[Any]:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Op[Any]:
        return self.request("DELETE", path, **kwargs)
