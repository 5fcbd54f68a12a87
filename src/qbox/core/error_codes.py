"""From an error on the wire back to its class: by ``code`` first, then by HTTP status.

The table is derived from the hierarchy in errors.py, never kept by hand: a new error class
is mapped by declaring its ``code``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qbox.core.errors import (
    AuthenticationError,
    ConflictError,
    InsufficientStorageError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QboxError,
    RateLimitedError,
    SandboxNotActiveError,
    UnavailableError,
    ValidationError,
)


def _wire_classes(root: type[QboxError]) -> Iterator[type[QboxError]]:
    """The errors a server may send, parents before children, in the order defined here.

    A class that declares no ``code`` of its own refines its parent's (the
    parent stands for it); status 0 marks an error raised by the client only.
    """
    for cls in root.__subclasses__():
        if "code" in vars(cls) and cls.status != 0:
            yield cls
        yield from _wire_classes(cls)


# Derived, not kept by hand: a new error class is mapped by declaring its ``code``.
ERROR_CLASSES_BY_CODE: dict[str, type[QboxError]] = {cls.code: cls for cls in _wire_classes(QboxError)}
ERROR_CLASSES_BY_CODE.update(
    {
        "sandbox_already_terminated": SandboxNotActiveError,
        "policy_exceeded": InsufficientStorageError,
    }
)

_CLASSES_BY_STATUS: dict[int, type[QboxError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: UnavailableError,
    507: InsufficientStorageError,
}


def error_from_wire(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> QboxError:
    """Build the typed error for an HTTP error response (code first, then status)."""
    code: str | None = None
    message = f"qbox API error (HTTP {status})"
    details: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        if isinstance(err.get("code"), str):
            code = err["code"]
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        if isinstance(err.get("details"), dict):
            details = err["details"]
    elif isinstance(body, str) and body:
        message = body
    cls = ERROR_CLASSES_BY_CODE.get(code or "")
    if cls is None:
        cls = _CLASSES_BY_STATUS.get(status, InternalError if status >= 500 else QboxError)
    return cls(
        message,
        details=details,
        code=code or cls.code,
        status=status,
        request_id=request_id,
        retry_after=retry_after,
    )
