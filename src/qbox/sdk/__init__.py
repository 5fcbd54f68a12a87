"""qbox Python SDK: sandboxes you can create, run commands in and throw away.

    from qbox import Sandbox

    with Sandbox.create("python") as sb:
        print(sb.commands.run("python3 -c 'print(6 * 7)'").stdout)

``Sandbox`` blocks; ``AsyncSandbox`` has the same methods, awaited. Every
error is a ``QboxError`` (``qbox.core.errors``), mapped from the server's
error code.
"""

from __future__ import annotations

from qbox.core.errors import (
    AuthenticationError,
    BadGatewayError,
    CodeInterpreterDisabledError,
    CodeInterpreterUnavailableError,
    CommandExitError,
    CommandTimeoutError,
    ConflictError,
    ConnectionFailedError,
    ContextNotFoundError,
    ExecutionRaisedError,
    FeatureDisabledError,
    FileEncodingError,
    HostNoCapacityError,
    HostUnavailableError,
    InsufficientStorageError,
    InternalError,
    InvalidArgumentError,
    LanguageNotSupportedError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PortAlreadyExposedError,
    PortCountLimitError,
    PortInvalidError,
    PortNotFoundError,
    PortNotReachableError,
    PortReservedError,
    ProcessNotFoundError,
    QboxError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeoutError,
    SandboxNotActiveError,
    SandboxNotFoundError,
    SandboxSpawnError,
    SandboxSpawnTimeoutError,
    SignedUrlTtlInvalidError,
    SshDisabledError,
    SshUnavailableError,
    TemplateBuildError,
    TemplateBuildTimeoutError,
    TemplateNotFoundError,
    TemplateNotReadyError,
    TransportError,
    UnavailableError,
    ValidationError,
)
from qbox.core.states import SandboxState
from qbox.sdk._api_keys import ApiKeys, AsyncApiKeys
from qbox.sdk._async_code import AsyncCodeContexts
from qbox.sdk._async_commands import AsyncCommandHandle, AsyncCommands
from qbox.sdk._async_envs import AsyncEnvs
from qbox.sdk._async_files import AsyncFiles
from qbox.sdk._async_ports import AsyncPorts
from qbox.sdk._async_sandbox import AsyncSandbox
from qbox.sdk._audit import AsyncAudit, Audit
from qbox.sdk._code import CodeContexts
from qbox.sdk._code_models import (
    CodeContext,
    CodeEvent,
    CodeLanguage,
    Execution,
    ExecutionDone,
    ExecutionError,
    ExecutionStarted,
    Logs,
    Result,
    StreamOutput,
)
from qbox.sdk._commands import CommandHandle, Commands
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._env_ops import DotenvRejection, DotenvResult, EnvVar
from qbox.sdk._envs import Envs
from qbox.sdk._file_models import FileEntry, FileStat
from qbox.sdk._files import Files
from qbox.sdk._host_models import CreatedHostToken, Host, HostToken
from qbox.sdk._hosts import AsyncHosts, AsyncHostTokens, Hosts, HostTokens
from qbox.sdk._access_models import (
    ApiKeyInfo,
    AuditEntry,
    AuditPage,
    AuditVerification,
    CreatedApiKey,
    UserInfo,
)
from qbox.sdk._models import (
    ClusterCa,
    CommandLogs,
    CommandOutput,
    CommandResult,
    CommandStatus,
    ExecResult,
    Identity,
    LogEntry,
    ProcessInfo,
    SandboxInfo,
    ServiceInfo,
    SystemInfo,
    TemplateInfo,
    WarmPool,
    WarmPoolInfo,
)
from qbox.sdk._port_ops import Port, PortSpec
from qbox.sdk._ports import Ports
from qbox.sdk._quota_models import QuotaDefaults, QuotaInfo, QuotaValues
from qbox.sdk._sandbox import Sandbox
from qbox.sdk._system import AsyncSystem, System
from qbox.sdk._template_ops import Step
from qbox.sdk._template_sources import GitTemplateBuild
from qbox.sdk._templates import AsyncTemplate, AsyncTemplates, Template, Templates
from qbox.sdk._transport import AsyncByteStream, ByteStream
from qbox.sdk._users import AsyncUsers, Users

__all__ = [
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
