"""Process exit codes (WIRE_PROTOCOL.md §8.4) and how errors map onto them."""

from __future__ import annotations

from enum import IntEnum

from qbox.core.errors import (
    AuthenticationError,
    ConflictError,
    FeatureDisabledError,
    HostNoCapacityError,
    InsufficientStorageError,
    NotFoundError,
    PermissionDeniedError,
    QboxError,
    QuotaExceededError,
    RateLimitedError,
    TransportError,
    UnavailableError,
    ValidationError,
)


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    TRANSIENT = 5
    CONFLICT = 6
    VALIDATION = 7
    RATE_LIMITED = 8
    QUOTA = 9
    DECLINED = 10
    # `timeout`'s convention: a wait (e.g. `templates create --wait`) ran out.
    WAIT_TIMEOUT = 124


_BY_CODE: dict[str, ExitCode] = {
    "invalid_config": ExitCode.USAGE,
    "insecure_config": ExitCode.USAGE,  # the config file is open to other users (WIRE_PROTOCOL.md §8.3)
    "declined": ExitCode.DECLINED,
    "policy_exceeded": ExitCode.QUOTA,
    "port_count_limit": ExitCode.QUOTA,
    "build_timeout": ExitCode.WAIT_TIMEOUT,
}

# Most specific first: the first class the error is an instance of wins.
_BY_CLASS: tuple[tuple[type[QboxError], ExitCode], ...] = (
    (HostNoCapacityError, ExitCode.QUOTA),
    (InsufficientStorageError, ExitCode.QUOTA),
    (AuthenticationError, ExitCode.AUTH),
    (PermissionDeniedError, ExitCode.AUTH),
    (NotFoundError, ExitCode.NOT_FOUND),
    (ConflictError, ExitCode.CONFLICT),
    (FeatureDisabledError, ExitCode.CONFLICT),
    (QuotaExceededError, ExitCode.QUOTA),
    (RateLimitedError, ExitCode.RATE_LIMITED),
    (ValidationError, ExitCode.VALIDATION),
    (UnavailableError, ExitCode.TRANSIENT),
    (TransportError, ExitCode.TRANSIENT),
)

# For errors whose code and class say nothing more specific than ``QboxError``.
_BY_STATUS: dict[int, ExitCode] = {
    400: ExitCode.VALIDATION,
    401: ExitCode.AUTH,
    403: ExitCode.AUTH,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
    422: ExitCode.VALIDATION,
    429: ExitCode.RATE_LIMITED,
    503: ExitCode.TRANSIENT,
    507: ExitCode.QUOTA,
}


def exit_code_for(error: QboxError) -> ExitCode:
    if error.code in _BY_CODE:
        return _BY_CODE[error.code]
    for cls, code in _BY_CLASS:
        if isinstance(error, cls):
            return code
    return _BY_STATUS.get(error.status, ExitCode.ERROR)
