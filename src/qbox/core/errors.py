"""The one error hierarchy of qbox, shared by the server and the SDK.

Every error carries a snake_case ``code`` (the wire contract) and an HTTP
``status``. The server renders any ``QboxError`` as
``{"error": {"code", "message", "details"}}``; the SDK turns such a body back
into the same class through ``error_codes.error_from_wire`` — by code, never by message,
with a table built from the classes below (each declares its ``code``).

    QboxError
    ├── ValidationError            validation_error      400
    │   ├── PayloadTooLargeError   payload_too_large     413
    │   ├── PortInvalidError       port_invalid
    │   ├── PortReservedError      port_reserved
    │   ├── SignedUrlTtlInvalidError  signed_url_ttl_invalid
    │   ├── GitUrlInvalidError     git_url_invalid
    │   ├── DockerfilePathInvalidError  dockerfile_path_invalid
    │   └── BuildArgsInvalidError  build_args_invalid
    ├── AuthenticationError        unauthenticated       401
    │   └── RepoUnauthorizedError  repo_unauthorized     (a git server asked for credentials)
    ├── PermissionDeniedError      forbidden             403
    ├── NotFoundError              not_found             404
    │   ├── SandboxNotFoundError   sandbox_not_found
    │   ├── TemplateNotFoundError  template_not_found
    │   ├── ContextNotFoundError   context_not_found
    │   ├── ProcessNotFoundError   process_not_found
    │   ├── PortNotFoundError      port_not_found
    │   ├── RepoNotFoundError      repo_not_found
    │   └── RefNotFoundError       ref_not_found
    ├── MethodNotAllowedError      method_not_allowed    405
    ├── ConflictError              conflict              409
    │   ├── SandboxNotActiveError  sandbox_not_active
    │   ├── TemplateNotReadyError  template_not_ready
    │   ├── PortAlreadyExposedError  port_already_exposed
    │   └── InvalidArgumentError   invalid_argument
    │       └── LanguageNotSupportedError  language_not_supported
    ├── FeatureDisabledError       (policy/feature)      422
    │   ├── SshDisabledError       ssh_disabled
    │   └── CodeInterpreterDisabledError
    ├── RateLimitedError           rate_limited          429
    ├── QuotaExceededError         quota_exceeded        429
    ├── InternalError              internal              500
    ├── BadGatewayError            bad_gateway           502
    │   └── PortNotReachableError  port_not_reachable    (nothing listens on a sandbox's port)
    ├── UnavailableError           unavailable           503
    │   ├── HostUnavailableError   host_unavailable      (transient)
    │   ├── HostNoCapacityError    host_no_capacity      (transient)
    │   ├── CodeInterpreterUnavailableError  code_interpreter_unavailable  (transient)
    │   ├── SshUnavailableError    ssh_unavailable       (transient)
    │   └── GitResolveUnavailableError  git_resolve_unavailable  (transient when it says so)
    ├── InsufficientStorageError   insufficient_storage  507
    │   └── PortCountLimitError    port_count_limit
    ├── TransportError             (client side: never on the wire)
    │   ├── ConnectionFailedError
    │   └── RequestTimeoutError
    └── client side only: CommandExitError, CommandTimeoutError, FileEncodingError,
        TemplateBuildError, TemplateBuildTimeoutError, …

A few client-side conditions (a command that exited non-zero, a spawn that
did not reach ``running``) are raised by the SDK only; they live here too so
users catch one family.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Codes whose errors a client may retry even without ``details.transient``
# (the published client's rule, WIRE_PROTOCOL.md §2.4).
FORCED_TRANSIENT_CODES = frozenset(
    {"code_interpreter_unavailable", "ssh_unavailable", "host_no_capacity", "rate_limited"}
)


class QboxError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    # Errors of this class say ``details.transient: true`` unless told otherwise.
    transient_by_default: ClassVar[bool] = False

    def __init__(
        self,
        message: str = "",
        *,
        details: dict[str, Any] | None = None,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.details: dict[str, Any] = dict(details or {})
        if self.transient_by_default:
            self.details.setdefault("transient", True)
        # An instance may carry a more specific wire code than its class
        # (e.g. an unknown code received by the SDK, kept verbatim).
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return bool(self.details.get("transient")) or self.code in FORCED_TRANSIENT_CODES

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ValidationError(QboxError):
    code = "validation_error"
    status = 400

    @classmethod
    def for_fields(cls, field_errors: dict[str, str], message: str = "") -> ValidationError:
        summary = message or "; ".join(f"{k}: {v}" for k, v in field_errors.items())
        return cls(summary or "invalid request", details={"fieldErrors": field_errors})

    @property
    def field_errors(self) -> dict[str, str]:
        value = self.details.get("fieldErrors")
        return dict(value) if isinstance(value, dict) else {}


class PayloadTooLargeError(ValidationError):
    code = "payload_too_large"
    status = 413


class PortInvalidError(ValidationError):
    """A port number outside 1..65535."""

    code = "port_invalid"


class PortReservedError(ValidationError):
    """A port the platform uses inside every sandbox, or one under 1024 without ``force``."""

    code = "port_reserved"


class SignedUrlTtlInvalidError(ValidationError):
    code = "signed_url_ttl_invalid"


class GitUrlInvalidError(ValidationError):
    """A template's git URL the control plane will not fetch (scheme, credentials, a private address)."""

    code = "git_url_invalid"


class DockerfilePathInvalidError(ValidationError):
    """No Dockerfile at that path of the repository (or the path leaves it)."""

    code = "dockerfile_path_invalid"


class BuildArgsInvalidError(ValidationError):
    code = "build_args_invalid"


class AuthenticationError(QboxError):
    code = "unauthenticated"
    status = 401


class InvalidJoinTokenError(AuthenticationError):
    """A join token that is unknown, used, expired or revoked (``POST /v1/agent/join``)."""

    code = "invalid_join_token"


class RepoUnauthorizedError(AuthenticationError):
    """The git server asked for credentials (a private repository, or one it hides)."""

    code = "repo_unauthorized"


class InvalidHostCredentialError(AuthenticationError):
    """A heartbeat with a host credential that is unknown or revoked (the host was removed)."""

    code = "invalid_host_credential"


class PermissionDeniedError(QboxError):
    code = "forbidden"
    status = 403

    @property
    def required_scope(self) -> str | None:
        value = self.details.get("requiredScope")
        return str(value) if value is not None else None


class NotFoundError(QboxError):
    code = "not_found"
    status = 404


class SandboxNotFoundError(NotFoundError):
    code = "sandbox_not_found"


class TemplateNotFoundError(NotFoundError):
    code = "template_not_found"


class ContextNotFoundError(NotFoundError):
    code = "context_not_found"


class ProcessNotFoundError(NotFoundError):
    code = "process_not_found"


class PortNotFoundError(NotFoundError):
    """The sandbox does not expose that port."""

    code = "port_not_found"


class RepoNotFoundError(NotFoundError):
    code = "repo_not_found"


class RefNotFoundError(NotFoundError):
    """No branch, tag or commit of the repository by that name."""

    code = "ref_not_found"


class MethodNotAllowedError(QboxError):
    code = "method_not_allowed"
    status = 405


class ConflictError(QboxError):
    code = "conflict"
    status = 409


class SandboxNotActiveError(ConflictError):
    code = "sandbox_not_active"

    @property
    def current_state(self) -> str | None:
        value = self.details.get("currentState", self.details.get("status"))
        return str(value) if value is not None else None


class TemplateNotReadyError(ConflictError):
    code = "template_not_ready"


class PortAlreadyExposedError(ConflictError):
    """The sandbox already exposes that port: change it with PATCH instead."""

    code = "port_already_exposed"


class InvalidArgumentError(ConflictError):
    code = "invalid_argument"


class LanguageNotSupportedError(InvalidArgumentError):
    """No kernel for the language; ``details.language`` and ``details.supportedLanguages``."""

    code = "language_not_supported"


class FeatureDisabledError(QboxError):
    code = "feature_disabled"
    status = 422


class SshDisabledError(FeatureDisabledError):
    code = "ssh_disabled"


class CodeInterpreterDisabledError(FeatureDisabledError):
    code = "code_interpreter_disabled"


class RateLimitedError(QboxError):
    code = "rate_limited"
    status = 429


class QuotaExceededError(QboxError):
    """A per-user quota (running sandboxes, vCPUs, memory, disk, commands, shells) would be exceeded.

    ``details`` names the ``quota``, its ``limit``, what is ``used`` and what was ``requested``.
    """

    code = "quota_exceeded"
    status = 429


class InternalError(QboxError):
    code = "internal"
    status = 500


class BadGatewayError(QboxError):
    code = "bad_gateway"
    status = 502


class PortNotReachableError(BadGatewayError):
    """Nothing answers on the sandbox's port (a preview request, or ``expose_and_wait`` that
    ran out of time)."""

    code = "port_not_reachable"


class UnavailableError(QboxError):
    code = "unavailable"
    status = 503


class HostUnavailableError(UnavailableError):
    code = "host_unavailable"
    transient_by_default = True


class HostNoCapacityError(UnavailableError):
    code = "host_no_capacity"
    transient_by_default = True


class CodeInterpreterUnavailableError(UnavailableError):
    """The sandbox's kernels are still starting (or restarting): retry shortly."""

    code = "code_interpreter_unavailable"
    transient_by_default = True


class SshUnavailableError(UnavailableError):
    """The sandbox cannot give a terminal just now (its runtime failed to start one)."""

    code = "ssh_unavailable"
    transient_by_default = True


class GitResolveUnavailableError(UnavailableError):
    """The git server could not be reached (or did not answer in time) to resolve or fetch a
    ref; ``details.transient`` says whether trying again may help."""

    code = "git_resolve_unavailable"


class InsufficientStorageError(QboxError):
    code = "insufficient_storage"
    status = 507


class PortCountLimitError(InsufficientStorageError):
    """The sandbox already exposes as many ports as it may (``QBOX_MAX_PORTS_PER_SANDBOX``)."""

    code = "port_count_limit"


class TransportError(QboxError):
    """The request did not get an HTTP answer (client side only)."""

    code = "transport_error"
    status = 0


class ConnectionFailedError(TransportError):
    code = "connection_failed"


class RequestTimeoutError(TransportError):
    code = "request_timeout"


# --- raised by the SDK only -------------------------------------------------


class SandboxSpawnError(QboxError):
    """The sandbox reached a terminal state instead of ``running``."""

    code = "spawn_failed"
    status = 0


class SandboxSpawnTimeoutError(QboxError):
    """The sandbox was still starting when the wait ran out."""

    code = "spawn_timeout"
    status = 0


class CommandExitError(QboxError):
    """A foreground command exited with a non-zero status."""

    code = "command_failed"
    status = 0

    def __init__(self, message: str, *, exit_code: int, stdout: str, stderr: str) -> None:
        super().__init__(message, details={"exitCode": exit_code})
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class CommandTimeoutError(QboxError):
    code = "command_timeout"
    status = 0


class FileEncodingError(QboxError):
    """A file read as text is not UTF-8."""

    code = "not_utf8"
    status = 0


class ExecutionRaisedError(QboxError):
    """Code run with ``run_code(..., raise_on_error=True)`` raised or timed out; the
    whole ``Execution`` (results and logs so far) is in ``execution``."""

    code = "execution_error"
    status = 0

    def __init__(self, message: str, *, execution: Any) -> None:
        super().__init__(message)
        self.execution = execution


class TemplateBuildError(QboxError):
    """The template's build failed; ``build_error`` says why (e.g. which step exited non-zero)."""

    code = "build_failed"
    status = 0

    def __init__(self, message: str, *, template_id: str, build_error: str | None) -> None:
        super().__init__(message, details={"templateId": template_id, "buildError": build_error})
        self.template_id = template_id
        self.build_error = build_error


class TemplateBuildTimeoutError(QboxError, TimeoutError):
    """The build was still running when the wait ran out; it goes on on the server."""

    code = "build_timeout"
    status = 0

    def __init__(self, message: str, *, template_id: str) -> None:
        super().__init__(message, details={"templateId": template_id})
        self.template_id = template_id
