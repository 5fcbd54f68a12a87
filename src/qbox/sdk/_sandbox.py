"""``Sandbox``: create, connect to, inspect and end sandboxes (blocking API)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from qbox.core.errors import NotFoundError, QboxError
from qbox.sdk import _code_ops as code_ops
from qbox.sdk import _sandbox_ops as ops
from qbox.sdk._code import CodeContexts, stream_events
from qbox.sdk._code_models import CodeEvent, Execution, ExecutionError, Result
from qbox.sdk._code_ops import Callbacks, ContextRef, ExecuteRequest
from qbox.sdk._commands import Commands
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._envs import Envs
from qbox.sdk._files import Files
from qbox.sdk._hybrid import class_or_instance
from qbox.sdk._models import ExecResult, LogEntry, SandboxInfo
from qbox.sdk._shell_ops import require_websockets
from qbox.sdk._port_ops import PortSpec
from qbox.sdk._ports import Ports
from qbox.sdk._transport import Connection

if TYPE_CHECKING:
    from qbox.sdk._shell import Shell


# The class forms of ``get_info`` and ``logs``: they take the id an instance knows.
def _get_info_by_id(
    sandbox_id: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    request_timeout: float | None = None,
    config: ConnectionConfig | None = None,
) -> SandboxInfo:
    with Connection.open(config, api_key, base_url, request_timeout) as conn:
        return conn.run(ops.get_info(conn.api, sandbox_id))


def _logs_by_id(
    sandbox_id: str,
    *,
    tail: int | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    request_timeout: float | None = None,
    config: ConnectionConfig | None = None,
) -> list[LogEntry]:
    with Connection.open(config, api_key, base_url, request_timeout) as conn:
        return conn.run(ops.logs(conn.api, sandbox_id, tail))


class Sandbox:
    """A running sandbox. Use ``Sandbox.create()`` or ``Sandbox.connect(id)``.

    As a context manager it kills the sandbox on exit.
    """

    def __init__(self, info: SandboxInfo, connection: Connection) -> None:
        self._info = info
        self._conn = connection
        self.commands = Commands(connection, info.id)
        self.files = Files(connection, info.id)
        self.ports = Ports(connection, info.id)
        self.envs = Envs(connection, info.id)
        self.code_contexts = CodeContexts(connection, info.id)

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def sandbox_id(self) -> str:
        return self._info.id

    @property
    def info(self) -> SandboxInfo:
        """The sandbox as last seen (``get_info()`` refreshes it)."""
        return self._info

    @classmethod
    def create(
        cls,
        template: str = "python",
        *,
        timeout: int | None = 300,
        metadata: Mapping[str, str] | None = None,
        envs: Mapping[str, str] | None = None,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        disk_size_mb: int | None = None,
        allow_internet_access: bool | None = None,
        ports: Sequence[PortSpec] | None = None,
        wait_timeout: float | None = 120,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Sandbox:
        """Spawn a sandbox from a template (name or ``tpl_…`` id) and wait until it runs.

        ``timeout`` is the auto-kill window in seconds (0 disables it, ``None``
        leaves the server default). ``disk_size_mb`` caps the writable disk;
        ``allow_internet_access=False`` cuts all egress (both default to the
        template's). ``ports`` are exposed with it and route as soon as it runs.
        ``wait_timeout=None`` returns at once.
        Raises ``SandboxSpawnError`` if it ends instead of starting and
        ``SandboxSpawnTimeoutError`` if it is still starting after the wait.
        """
        conn = Connection.open(config, api_key, base_url, request_timeout)
        try:
            info = conn.run(
                ops.create(
                    conn.api,
                    template=template,
                    timeout=timeout,
                    metadata=metadata,
                    envs=envs,
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                    disk_size_mb=disk_size_mb,
                    allow_internet_access=allow_internet_access,
                    ports=ports,
                    wait_timeout=wait_timeout,
                )
            )
        except BaseException:
            conn.close()
            raise
        return cls(info, conn)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Sandbox:
        """Attach to a running sandbox (``SandboxNotActiveError`` if it is not running)."""
        conn = Connection.open(config, api_key, base_url, request_timeout)
        try:
            info = conn.run(ops.connect(conn.api, sandbox_id))
        except BaseException:
            conn.close()
            raise
        return cls(info, conn)

    @classmethod
    def list(
        cls,
        status: str | None = None,
        template_id: str | None = None,
        limit: int | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> builtins.list[SandboxInfo]:
        """Sandboxes in every state, or only ``status``; ``template_id`` may be a name."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.list_sandboxes(conn.api, status=status, template_id=template_id, limit=limit))

    @classmethod
    def kill_by_id(
        cls,
        sandbox_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> bool:
        """End a sandbox; False if it had already ended."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.kill(conn.api, sandbox_id))


    def _get_info(self) -> SandboxInfo:
        """The sandbox's current state: ``sb.get_info()`` or ``Sandbox.get_info(id)``."""
        self._info = self._conn.run(ops.get_info(self._conn.api, self.id))
        return self._info

    get_info = class_or_instance(_get_info_by_id, _get_info)

    def _logs(self, *, tail: int | None = None) -> builtins.list[LogEntry]:
        """Lifecycle events and start-command output, oldest first: ``sb.logs()`` or
        ``Sandbox.logs(id)`` (which also works for sandboxes that have ended)."""
        return self._conn.run(ops.logs(self._conn.api, self.id, tail))

    logs = class_or_instance(_logs_by_id, _logs)

    def set_timeout(self, seconds: int) -> SandboxInfo:
        """Auto-kill ``seconds`` from now (0 disables auto-kill)."""
        self._info = self._conn.run(ops.set_timeout(self._conn.api, self.id, seconds))
        return self._info

    def get_host(self, port: int) -> str:
        """The preview host of an exposed port (``8000-sb_….localhost:8080``), as E2B's
        ``get_host``; ``PortNotFoundError`` if the port is not exposed."""
        return (self.ports.get(port)).host

    def kill(self) -> bool:
        """End the sandbox; False if it had already ended."""
        return self._conn.run(ops.kill(self._conn.api, self.id))

    def exec(
        self,
        cmd: str,
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: str | None = None,
        timeout: float | None = 60,
    ) -> ExecResult:
        """Run ``cmd args…`` (no shell) in one request and return its output and exit code.

        Does not raise on a non-zero exit; see ``commands.run`` for that.
        """
        return self._conn.run(
            ops.exec_command(
                self._conn.api,
                self.id,
                cmd=cmd,
                args=args,
                cwd=cwd,
                envs=envs,
                user=user,
                stdin=stdin,
                timeout=timeout,
            )
        )

    def run_code(
        self,
        code: str,
        language: str | None = None,
        context: ContextRef | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 60,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
        on_result: Callable[[Result], object] | None = None,
        on_error: Callable[[ExecutionError], object] | None = None,
        raise_on_error: bool = False,
    ) -> Execution:
        """Run ``code`` in the sandbox's interpreter and return its ``Execution``.

        ``language`` picks that language's default context, ``context`` (a
        ``CodeContext`` or its id) a context of your own; neither: the default
        Python context. Variables persist in a context between calls. A code
        error comes back in ``Execution.error`` (as in E2B), or is raised as
        ``ExecutionRaisedError`` with ``raise_on_error=True``, which also raises
        on a timeout. With callbacks, output is delivered as it is produced.
        """
        request = ExecuteRequest.of(code, language, context, env, timeout)
        callbacks = Callbacks(on_stdout, on_stderr, on_result, on_error)
        return self._conn.run(
            code_ops.run(self._conn.api, self.id, request, callbacks, raise_on_error=raise_on_error)
        )

    def run_code_stream(
        self,
        code: str,
        language: str | None = None,
        context: ContextRef | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 60,
    ) -> Iterator[CodeEvent]:
        """Run ``code`` and yield its events as they come: ``ExecutionStarted``, then
        ``StreamOutput``, ``Result`` and ``ExecutionError`` in order, ``ExecutionDone`` last.
        Stopping early closes the stream (the code runs on)."""
        request = ExecuteRequest.of(code, language, context, env, timeout)
        yield from stream_events(self._conn, self.id, request)

    def shell(self, cols: int = 80, rows: int = 24, *, command: str | None = None, user: str | None = None) -> Shell:
        """An interactive terminal: the login shell of ``user`` (default ``user``), or ``command``
        run under it, in a ``cols``×``rows`` window. Needs ``pip install 'qbox[shell]'``.
        ``SshDisabledError`` if the template does not enable the shell."""
        require_websockets()
        from qbox.sdk._shell import open_shell

        return open_shell(self._conn.api, self.id, cols, rows, command, user)

    def close(self) -> None:
        """Release the HTTP connection; the sandbox keeps running."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.kill()
        except NotFoundError:
            pass
        except QboxError:
            if exc is None:  # never mask the error that ended the block
                raise
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, status={self._info.status!r})"
