"""The public surface: what ``import qbox`` offers, pinned, and what it must not drag in."""

from __future__ import annotations

import subprocess
import sys

import qbox
import qbox.sdk

PUBLIC = [
    "ApiKeyInfo",
    "ApiKeys",
    "AsyncApiKeys",
    "AsyncAudit",
    "AsyncByteStream",
    "AsyncCodeContexts",
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncEnvs",
    "AsyncFiles",
    "AsyncHostTokens",
    "AsyncHosts",
    "AsyncPorts",
    "AsyncSandbox",
    "AsyncSystem",
    "AsyncTemplate",
    "AsyncTemplates",
    "AsyncUsers",
    "Audit",
    "AuditEntry",
    "AuditPage",
    "AuditVerification",
    "AuthenticationError",
    "BadGatewayError",
    "ByteStream",
    "ClusterCa",
    "CodeContext",
    "CodeContexts",
    "CodeEvent",
    "CodeInterpreterDisabledError",
    "CodeInterpreterUnavailableError",
    "CodeLanguage",
    "CommandExitError",
    "CommandHandle",
    "CommandLogs",
    "CommandOutput",
    "CommandResult",
    "CommandStatus",
    "CommandTimeoutError",
    "Commands",
    "ConflictError",
    "ConnectionConfig",
    "ConnectionFailedError",
    "ContextNotFoundError",
    "CreatedApiKey",
    "CreatedHostToken",
    "DotenvRejection",
    "DotenvResult",
    "EnvVar",
    "Envs",
    "ExecResult",
    "Execution",
    "ExecutionDone",
    "ExecutionError",
    "ExecutionRaisedError",
    "ExecutionStarted",
    "FeatureDisabledError",
    "FileEncodingError",
    "FileEntry",
    "FileStat",
    "Files",
    "GitTemplateBuild",
    "Host",
    "HostNoCapacityError",
    "HostToken",
    "HostTokens",
    "HostUnavailableError",
    "Hosts",
    "Identity",
    "InsufficientStorageError",
    "InternalError",
    "InvalidArgumentError",
    "LanguageNotSupportedError",
    "LogEntry",
    "Logs",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Port",
    "PortAlreadyExposedError",
    "PortCountLimitError",
    "PortInvalidError",
    "PortNotFoundError",
    "PortNotReachableError",
    "PortReservedError",
    "PortSpec",
    "Ports",
    "ProcessInfo",
    "ProcessNotFoundError",
    "QboxError",
    "QuotaDefaults",
    "QuotaExceededError",
    "QuotaInfo",
    "QuotaValues",
    "RateLimitedError",
    "RequestTimeoutError",
    "Result",
    "Sandbox",
    "SandboxInfo",
    "SandboxNotActiveError",
    "SandboxNotFoundError",
    "SandboxSpawnError",
    "SandboxSpawnTimeoutError",
    "SandboxState",
    "ServiceInfo",
    "SignedUrlTtlInvalidError",
    "SshDisabledError",
    "SshUnavailableError",
    "Step",
    "StreamOutput",
    "System",
    "SystemInfo",
    "Template",
    "TemplateBuildError",
    "TemplateBuildTimeoutError",
    "TemplateInfo",
    "TemplateNotFoundError",
    "TemplateNotReadyError",
    "Templates",
    "TransportError",
    "UnavailableError",
    "UserInfo",
    "Users",
    "ValidationError",
    "WarmPool",
    "WarmPoolInfo",
]


def test_all_is_sorted_and_pinned() -> None:
    assert qbox.sdk.__all__ == sorted(qbox.sdk.__all__) == PUBLIC
    assert qbox.__all__ == sorted(qbox.__all__) == sorted([*PUBLIC, "__version__"])


def test_every_name_resolves_to_the_same_object() -> None:
    for name in PUBLIC:
        assert getattr(qbox, name) is getattr(qbox.sdk, name)


def test_one_class_in_the_sdk_is_called_step_the_template_build_step() -> None:
    import pkgutil

    steps = {}
    for module in pkgutil.iter_modules(qbox.sdk.__path__, "qbox.sdk."):
        found = getattr(__import__(module.name, fromlist=["_"]), "Step", None)
        if found is not None:
            steps[module.name] = found
    assert steps and all(found is qbox.Step for found in steps.values()), steps
    assert qbox.Step.run("make") == {"run": "make", "user": "root"}


def test_errors_are_the_core_hierarchy() -> None:
    from qbox.core import errors

    assert qbox.QboxError is errors.QboxError
    assert issubclass(qbox.SandboxNotFoundError, qbox.NotFoundError)


def test_importing_qbox_and_the_cli_stays_light() -> None:
    code = (
        "import sys, qbox, qbox.cli.main;"
        "heavy = {'fastapi', 'sqlalchemy', 'uvicorn', 'starlette', 'pydantic', 'alembic'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
