"""Where the SDK finds its API key, base URL and timeouts.

Precedence, per field: keyword argument > ``ConnectionConfig`` field >
environment > fallback > default. The fallback is a ``ConnectionConfig`` of
values that yield to the environment: the CLI's active profile (its config
file, WIRE_PROTOCOL.md §8.1); the SDK itself reads no file (§1.1).
Environment variables:

    QBOX_API_KEY   (or TOKEN, when it holds a ``qbox_`` key)
    QBOX_BASE_URL  (or QBOX, when it holds an http(s) URL)
    QBOX_REQUEST_TIMEOUT, QBOX_MAX_RETRIES

``TOKEN`` and ``QBOX`` are the names the API reference's curl examples
export; they are generic, so they are only taken when they look right.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from qbox.core.errors import QboxError

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
API_KEY_PREFIX = "qbox_"


class Clock:
    """Monotonic time and sleeping; tests swap in a fake that does not wait."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach a qbox control plane. Unset fields fall back to the environment.

    ``transport`` is an ``httpx`` transport (e.g. ``httpx.MockTransport`` in
    tests, or one with a proxy); ``clock`` replaces real sleeping in tests.
    """

    api_key: str | None = None
    base_url: str | None = None
    request_timeout: float | None = None
    max_retries: int | None = None
    transport: Any = None
    clock: Clock | None = None

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        fallback: ConnectionConfig | None = None,
        **overrides: Any,
    ) -> ConnectionConfig:
        """Resolve every field now: overrides (``None`` = unset) > environment > ``fallback`` > defaults."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return resolve(cls(**given), environ, fallback)

    def merged(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
    ) -> ConnectionConfig:
        return replace(
            self,
            api_key=api_key if api_key is not None else self.api_key,
            base_url=base_url if base_url is not None else self.base_url,
            request_timeout=request_timeout if request_timeout is not None else self.request_timeout,
        )


def _config_error(message: str) -> QboxError:
    return QboxError(message, code="invalid_config", status=0)


def _env_number(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise _config_error(f"{name} must be a number, got {raw!r}") from None


def _env_api_key(environ: Mapping[str, str]) -> str | None:
    key = environ.get("QBOX_API_KEY", "").strip()
    if key:
        return key
    token = environ.get("TOKEN", "").strip()
    return token if token.startswith(API_KEY_PREFIX) else None


def _env_base_url(environ: Mapping[str, str]) -> str | None:
    url = environ.get("QBOX_BASE_URL", "").strip()
    if url:
        return url
    qbox = environ.get("QBOX", "").strip()
    return qbox if qbox.startswith(("http://", "https://")) else None


def resolve(
    config: ConnectionConfig,
    environ: Mapping[str, str] | None = None,
    fallback: ConnectionConfig | None = None,
) -> ConnectionConfig:
    env = os.environ if environ is None else environ
    below = fallback or ConnectionConfig()
    base_url = config.base_url or _env_base_url(env) or below.base_url or DEFAULT_BASE_URL
    timeout = config.request_timeout
    if timeout is None:
        timeout = _env_number(env, "QBOX_REQUEST_TIMEOUT") or below.request_timeout or DEFAULT_REQUEST_TIMEOUT
    retries = config.max_retries
    if retries is None:
        env_retries = _env_number(env, "QBOX_MAX_RETRIES")
        if env_retries is not None:
            retries = int(env_retries)
        else:
            retries = DEFAULT_MAX_RETRIES if below.max_retries is None else below.max_retries
    if timeout <= 0:
        raise _config_error("request_timeout must be positive")
    if retries < 0:
        raise _config_error("max_retries must be zero or more")
    return replace(
        config,
        api_key=config.api_key or _env_api_key(env) or below.api_key,
        base_url=base_url.rstrip("/"),
        request_timeout=float(timeout),
        max_retries=retries,
        transport=config.transport if config.transport is not None else below.transport,
        clock=config.clock or below.clock or Clock(),
    )
