"""The control plane's client for host agents (docs/agent-protocol.md).

One Protocol, one HTTP implementation. Agent errors come back in the public
error envelope and are re-raised as the same ``qbox.core.errors`` class, so a
``sandbox_not_found`` from the agent is a ``SandboxNotFoundError`` here. An
agent that cannot be reached is ``HostUnavailableError`` (503, transient).
Shells are WebSockets (``websockets``); a refused upgrade carries the same
envelope and becomes the same error.

Every path segment of an internal URL is percent-encoded whole (``_path``):
an id holding ``/``, ``?``, ``#``, ``%`` or control characters names one
segment, never another route or a query. Calls that last as long as a
user's command (exec, follows, output reads, transfers, builds) travel on
connections of their own, outside the pool the short calls share, so a
member's long execs never make anyone else's calls wait; ``MAX_LONG_CALLS``
bounds how many one agent carries at once (past it: 503 host_no_capacity).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote, urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from qbox.core.errors import HostNoCapacityError, HostUnavailableError, QboxError, error_from_wire

# Exec and command calls may legitimately run long; the agent enforces the
# command's own timeout, this is the backstop for a stuck agent.
_DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_EXEC_GRACE_SECONDS = 15.0
# Long calls, each on a connection of its own (none kept alive, none shared). A
# member's share of them is bounded by their command quota; this bounds the host's.
MAX_LONG_CALLS = 1024
_LONG_LIMITS = httpx.Limits(max_connections=MAX_LONG_CALLS, max_keepalive_connections=0)
# Past MAX_LONG_CALLS a call waits this long for one to end, then is refused.
_LONG_POOL_WAIT = 5.0
# No read timeout: output may pause for as long as the command likes.
_UNBOUNDED = httpx.Timeout(None, connect=5.0, pool=_LONG_POOL_WAIT)
# A transfer's chunks keep coming; the last step (the agent's fsync of a large
# file) may take long, so only connecting has a short limit.
_TRANSFER_TIMEOUT = httpx.Timeout(600.0, connect=5.0, pool=_LONG_POOL_WAIT)
# A shell's output frames are at most 64 KiB; 1 MiB leaves room for a larger agent.
# Few frames are queued, so a slow client soon stops reading from the agent's socket.
_SHELL_MAX_MESSAGE = 1024 * 1024
_SHELL_MAX_QUEUE = 4
_SHELL_OPEN_TIMEOUT = 10.0
_SHELL_CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class AgentEndpoint:
    """How to reach one agent: a unix socket path or an http(s) URL, and its secret."""

    address: str
    secret: str


@dataclass
class FileStream:
    """A file being read from an agent: its size, then its bytes (close it when done)."""

    size: int
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


@dataclass
class Relayed:
    """An agent's answer relayed as it arrives (JSON or NDJSON bytes). Close it once
    done — also when it was never read (its client went away first)."""

    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks


@dataclass(frozen=True)
class WriteOptions:
    mode: str = "644"
    create_parents: bool = True
    append: bool = False
    user: str | None = None
    max_bytes: int | None = None
    # The body's length when the client announced it (lets the agent see it too).
    length: int | None = None

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"mode": self.mode,
                                  "createParents": str(self.create_parents).lower(),
                                  "append": str(self.append).lower()}
        if self.user:
            params["user"] = self.user
        if self.max_bytes is not None:
            params["maxBytes"] = self.max_bytes
        return params


@dataclass(frozen=True)
class ShellOptions:
    cols: int = 80
    rows: int = 24
    # Run this command line in the user's login shell instead of an interactive one.
    command: str | None = None
    user: str | None = None

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"cols": self.cols, "rows": self.rows}
        if self.command is not None:
            params["command"] = self.command
        return _with_user(params, self.user)


class AgentShell(Protocol):
    """A shell running on an agent: send client frames verbatim, iterate over its output.

    Iteration ends when the agent closes (``close_code``/``close_reason`` then
    tell how; ``1006`` if the connection broke). A frame sent after the end is dropped.
    """

    @property
    def close_code(self) -> int | None: ...
    @property
    def close_reason(self) -> str: ...
    async def send(self, frame: str | bytes) -> None: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


class AgentClient(Protocol):
    async def health(self) -> dict[str, Any]: ...
    async def import_image(self, ref: str, name: str) -> dict[str, Any]: ...
    # A template build's events (``log``, then ``result`` or ``error``); closing the
    # iterator cancels the build. Errors before the first event are raised.
    async def build(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]: ...
    async def gc_images(self, keep: list[str]) -> dict[str, Any]: ...
    async def create_sandbox(self, spec: dict[str, Any]) -> dict[str, Any]: ...
    async def list_sandboxes(self) -> list[dict[str, Any]]: ...
    async def delete_sandbox(self, sandbox_id: str) -> None: ...
    async def file_stat(self, sandbox_id: str, path: str, user: str | None) -> dict[str, Any]: ...
    async def list_files(self, sandbox_id: str, path: str,
                         user: str | None) -> list[dict[str, Any]]: ...
    async def read_file(self, sandbox_id: str, path: str, user: str | None) -> FileStream: ...
    async def write_file(self, sandbox_id: str, path: str, content: AsyncIterator[bytes],
                         options: WriteOptions) -> dict[str, Any]: ...
    async def remove_file(self, sandbox_id: str, path: str, recursive: bool,
                          user: str | None) -> None: ...
    async def make_dir(self, sandbox_id: str, body: dict[str, Any]) -> None: ...
    async def rename_file(self, sandbox_id: str, body: dict[str, Any]) -> None: ...
    async def code_languages(self, sandbox_id: str) -> dict[str, Any]: ...
    async def code_contexts(self, sandbox_id: str) -> dict[str, Any]: ...
    async def create_code_context(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def restart_code_context(self, sandbox_id: str, context_id: str) -> dict[str, Any]: ...
    async def delete_code_context(self, sandbox_id: str, context_id: str) -> None: ...
    # NDJSON CodeEvent lines (WIRE_PROTOCOL §5.1); an error before the first is raised.
    # Close it once done (also unread): an execution left before `complete` is cancelled.
    async def code_execute(self, sandbox_id: str, body: dict[str, Any]) -> Relayed: ...
    # An /exec's answer, read whole (the control plane's own short commands: readyCmd).
    async def exec(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def start_command(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def list_commands(self, sandbox_id: str) -> list[dict[str, Any]]: ...
    async def command_status(self, sandbox_id: str, pid: int) -> dict[str, Any]: ...
    async def kill_command(self, sandbox_id: str, pid: int, signal: int) -> None: ...
    # Answers relayed as they arrive; an error before the first byte is raised, as
    # QboxError. An /exec's and a log read's JSON (output up to the cap per stream is
    # never one string here), follow and streamed-exec NDJSON events.
    async def exec_relayed(self, sandbox_id: str, body: dict[str, Any]) -> Relayed: ...
    async def command_logs(self, sandbox_id: str, pid: int,
                           offsets: dict[str, int] | None = None) -> Relayed: ...
    async def follow_command(self, sandbox_id: str, pid: int,
                             offsets: dict[str, int]) -> Relayed: ...
    async def exec_stream(self, sandbox_id: str, body: dict[str, Any]) -> Relayed: ...
    async def write_stdin(self, sandbox_id: str, pid: int, body: dict[str, Any]) -> None: ...
    # Refused upgrades are raised as their QboxError, before anything is relayed.
    async def open_shell(self, sandbox_id: str, options: ShellOptions) -> AgentShell: ...
    async def aclose(self) -> None: ...


def _error_of(response: httpx.Response) -> QboxError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return _agent_error(response.status_code, body)


def _agent_error(status: int, body: Any) -> QboxError:
    error = error_from_wire(status, body)
    if error.status == 401:
        # Our own credentials to the agent are wrong: not the client's fault.
        return QboxError("control plane is not authorised at the host agent",
                         code="internal", status=500)
    return error


def _with_user(params: dict[str, Any], user: str | None) -> dict[str, Any]:
    return {**params, "user": user} if user else params


def _segment(value: str | int) -> str:
    text = quote(str(value), safe="")
    # "." and ".." would be dot segments, which URL normalisation removes.
    return text.replace(".", "%2E") if text in (".", "..") else text


def _path(*segments: str | int) -> str:
    """An internal URL path (below /internal/v1), every segment percent-encoded whole."""
    return "".join("/" + _segment(segment) for segment in segments)


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()


async def _json_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """An NDJSON stream's objects; a broken connection ends it early (the caller sees no
    last event). Closing the iterator closes the connection."""
    try:
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event
    except httpx.HTTPError:
        return
    finally:
        await response.aclose()


async def _relay_events(response: httpx.Response) -> AsyncIterator[bytes]:
    """An NDJSON stream's lines; one the agent breaks off just ends (the client sees no
    ``exit`` event and may fall back to polling), never with half a line."""
    try:
        async for line in response.aiter_lines():
            if line:
                yield line.encode() + b"\n"
    except httpx.HTTPError:
        return
    finally:
        await response.aclose()


class _WebSocketShell:
    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    @property
    def close_code(self) -> int | None:
        return self._connection.close_code

    @property
    def close_reason(self) -> str:
        return self._connection.close_reason or ""

    async def send(self, frame: str | bytes) -> None:
        try:
            await self._connection.send(frame)
        except ConnectionClosed:
            pass  # iteration reports the end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for message in self._connection:
                yield message if isinstance(message, bytes) else message.encode()
        except ConnectionClosed:
            return

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def _denial_body(raw: bytes | None) -> Any:
    text = (raw or b"").decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


# Opens an agent's shell WebSocket: (path with query, headers) -> the open shell.
# Tests pass one that speaks to the agent app in-process, as ``transport`` does for HTTP.
ShellConnector = Callable[[str, dict[str, str]], Awaitable[AgentShell]]


class HttpAgentClient:
    def __init__(self, endpoint: AgentEndpoint, transport: httpx.AsyncBaseTransport | None = None,
                 shell_connector: ShellConnector | None = None):
        self._connect_shell = shell_connector or self._connect_websocket
        over_http = endpoint.address.startswith(("http://", "https://"))
        base_url = endpoint.address.rstrip("/") if over_http else "http://agent"
        self._endpoint = endpoint

        def client(limits: httpx.Limits, timeout: httpx.Timeout) -> httpx.AsyncClient:
            own = transport
            if own is None:
                own = httpx.AsyncHTTPTransport(limits=limits, uds=None if over_http
                                               else endpoint.address)
            return httpx.AsyncClient(
                base_url=base_url + "/internal/v1", transport=own, timeout=timeout,
                headers={"Authorization": f"Bearer {endpoint.secret}"})

        # Short calls share a pool; long ones (``long=True``) never use it.
        self._http = client(httpx.Limits(max_connections=100, max_keepalive_connections=20),
                            _DEFAULT_TIMEOUT)
        self._long = client(_LONG_LIMITS, _UNBOUNDED)

    def _request(self, method: str, path: str, *, long: bool = False,
                 **kwargs: Any) -> httpx.Request:
        return (self._long if long else self._http).build_request(method, path, **kwargs)

    async def _send(self, request: httpx.Request, *, stream: bool = False,
                    long: bool = False) -> httpx.Response:
        """Send ``request``; an error answer is raised as its QboxError (body read first)."""
        try:
            response = await (self._long if long else self._http).send(request, stream=stream)
        except httpx.PoolTimeout as exc:
            if not long:
                raise HostUnavailableError(
                    f"host agent did not answer in time ({request.method} {request.url.path})"
                ) from exc
            raise HostNoCapacityError(
                f"the host agent carries {MAX_LONG_CALLS} long-running calls already; "
                "retry when some have ended") from exc
        except httpx.TimeoutException as exc:
            raise HostUnavailableError(
                f"host agent did not answer in time ({request.method} {request.url.path})"
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            # OSError: a pooled connection that broke under us (seen as EBADF after a
            # cancelled request) is the agent being unreachable, not a server bug.
            raise HostUnavailableError(f"host agent unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise _error_of(response)
        return response

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """A JSON call; one given a ``timeout`` (longer than the default) is a long call."""
        long = timeout is not None
        request = self._request(
            method, path, long=long, json=json, params=params,
            timeout=(httpx.USE_CLIENT_DEFAULT if timeout is None
                     else httpx.Timeout(timeout, connect=5.0, pool=_LONG_POOL_WAIT)))
        response = await self._send(request, long=long)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def _relayed(self, request: httpx.Request, *, lines: bool = False) -> Relayed:
        response = await self._send(request, stream=True, long=True)
        return Relayed(_relay_events(response) if lines else _relay(response), response.aclose)

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    async def import_image(self, ref: str, name: str) -> dict[str, Any]:
        # Pulling and unpacking an image can take minutes.
        result: dict[str, Any] = await self._call(
            "POST", "/images", json={"ref": ref, "name": name}, timeout=1800
        )
        return result

    async def build(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        # No read timeout: a step may be silent for as long as it likes.
        response = await self._send(self._request(
            "POST", "/builds", long=True, json=body, headers={"Accept": "application/x-ndjson"},
            timeout=_UNBOUNDED), stream=True, long=True)
        return _json_events(response)

    async def gc_images(self, keep: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/images/gc", json={"keep": keep},
                                                  timeout=600)
        return result

    async def create_sandbox(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/sandboxes", json=spec, timeout=120)
        return result

    async def list_sandboxes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/sandboxes")
        return result or []

    async def delete_sandbox(self, sandbox_id: str) -> None:
        await self._call("DELETE", _path("sandboxes", sandbox_id), timeout=60)

    # --- files (streamed both ways) ---------------------------------------

    async def file_stat(self, sandbox_id: str, path: str, user: str | None) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", _path("sandboxes", sandbox_id, "files", "stat"), params=_with_user({"path": path}, user))
        return result

    async def list_files(self, sandbox_id: str, path: str,
                         user: str | None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call(
            "GET", _path("sandboxes", sandbox_id, "files", "list"), params=_with_user({"path": path}, user))
        return result

    async def read_file(self, sandbox_id: str, path: str, user: str | None) -> FileStream:
        request = self._request(
            "GET", _path("sandboxes", sandbox_id, "files", "content"), long=True,
            params=_with_user({"path": path}, user), timeout=_TRANSFER_TIMEOUT)
        response = await self._send(request, stream=True, long=True)
        try:
            size = int(response.headers["content-length"])
        except (KeyError, ValueError):
            await response.aclose()
            raise QboxError("host agent sent a file without its length", code="internal",
                            status=500) from None
        return FileStream(size, _relay(response), response.aclose)

    async def write_file(self, sandbox_id: str, path: str, content: AsyncIterator[bytes],
                         options: WriteOptions) -> dict[str, Any]:
        headers = {"Content-Type": "application/octet-stream"}
        if options.length is not None:
            headers["Content-Length"] = str(options.length)
        request = self._request(
            "PUT", _path("sandboxes", sandbox_id, "files", "content"), long=True,
            params={"path": path, **options.params()}, content=content, headers=headers,
            timeout=_TRANSFER_TIMEOUT)
        response = await self._send(request, long=True)
        result: dict[str, Any] = response.json()
        return result

    async def remove_file(self, sandbox_id: str, path: str, recursive: bool,
                          user: str | None) -> None:
        params = _with_user({"path": path, "recursive": str(recursive).lower()}, user)
        await self._call("DELETE", _path("sandboxes", sandbox_id, "files", "content"),
                         params=params)

    async def make_dir(self, sandbox_id: str, body: dict[str, Any]) -> None:
        await self._call("POST", _path("sandboxes", sandbox_id, "files", "mkdir"), json=body)

    async def rename_file(self, sandbox_id: str, body: dict[str, Any]) -> None:
        await self._call("POST", _path("sandboxes", sandbox_id, "files", "rename"), json=body)

    # --- code interpreter ---------------------------------------------------

    async def code_languages(self, sandbox_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", _path("sandboxes", sandbox_id, "code", "languages"))
        return result

    async def code_contexts(self, sandbox_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", _path("sandboxes", sandbox_id, "code", "contexts"))
        return result

    async def create_code_context(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        # Starting a kernel takes a second or two, more on a busy host.
        result: dict[str, Any] = await self._call(
            "POST", _path("sandboxes", sandbox_id, "code", "contexts"), json=body, timeout=120)
        return result

    async def restart_code_context(self, sandbox_id: str, context_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", _path("sandboxes", sandbox_id, "code", "contexts", context_id, "restart"),
            timeout=120)
        return result

    async def delete_code_context(self, sandbox_id: str, context_id: str) -> None:
        await self._call("DELETE", _path("sandboxes", sandbox_id, "code", "contexts", context_id),
                         timeout=60)

    async def code_execute(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        # No read timeout: the execution's own timeout is the agent's to enforce. Closing
        # the call before ``complete`` makes the agent interrupt the cell.
        return await self._relayed(self._request(
            "POST", _path("sandboxes", sandbox_id, "code", "execute"), long=True, json=body,
            headers={"Accept": "application/x-ndjson"}, timeout=_UNBOUNDED), lines=True)

    def _exec_request(self, sandbox_id: str, body: dict[str, Any]) -> httpx.Request:
        # The answer comes when the command ends: the agent enforces its timeout.
        timeout = body.get("timeoutSeconds")
        budget = (float(timeout) if timeout else 3600.0) + _EXEC_GRACE_SECONDS
        return self._request("POST", _path("sandboxes", sandbox_id, "exec"), long=True, json=body,
                             timeout=httpx.Timeout(budget, connect=5.0, pool=_LONG_POOL_WAIT))

    async def exec(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(self._exec_request(sandbox_id, body), long=True)
        result: dict[str, Any] = response.json()
        return result

    async def exec_relayed(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        return await self._relayed(self._exec_request(sandbox_id, body))

    async def start_command(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", _path("sandboxes", sandbox_id, "commands"), json=body
        )
        return result

    async def list_commands(self, sandbox_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call(
            "GET", _path("sandboxes", sandbox_id, "commands"))
        return result or []

    async def command_status(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", _path("sandboxes", sandbox_id, "commands", pid)
        )
        return result

    async def command_logs(self, sandbox_id: str, pid: int,
                           offsets: dict[str, int] | None = None) -> Relayed:
        return await self._relayed(self._request(
            "GET", _path("sandboxes", sandbox_id, "commands", pid, "logs"), long=True,
            params=offsets or None, timeout=_TRANSFER_TIMEOUT))

    async def follow_command(self, sandbox_id: str, pid: int,
                             offsets: dict[str, int]) -> Relayed:
        return await self._relayed(self._request(
            "GET", _path("sandboxes", sandbox_id, "commands", pid, "logs"), long=True,
            params={**offsets, "follow": "true"}, timeout=_UNBOUNDED), lines=True)

    async def exec_stream(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        return await self._relayed(self._request(
            "POST", _path("sandboxes", sandbox_id, "exec"), long=True, json=body,
            headers={"Accept": "application/x-ndjson"}, timeout=_UNBOUNDED), lines=True)

    async def write_stdin(self, sandbox_id: str, pid: int, body: dict[str, Any]) -> None:
        await self._call("POST", _path("sandboxes", sandbox_id, "commands", pid, "stdin"),
                         json=body)

    async def kill_command(self, sandbox_id: str, pid: int, signal: int) -> None:
        await self._call(
            "DELETE", _path("sandboxes", sandbox_id, "commands", pid), params={"signal": signal}
        )

    async def open_shell(self, sandbox_id: str, options: ShellOptions) -> AgentShell:
        path = (f"/internal/v1{_path('sandboxes', sandbox_id, 'shell')}"
                f"?{urlencode(options.params())}")
        return await self._connect_shell(path, {"Authorization": f"Bearer {self._endpoint.secret}"})

    async def _connect_websocket(self, path: str, headers: dict[str, str]) -> AgentShell:
        address = self._endpoint.address
        limits: dict[str, Any] = {"max_size": _SHELL_MAX_MESSAGE, "max_queue": _SHELL_MAX_QUEUE,
                                  "open_timeout": _SHELL_OPEN_TIMEOUT, "close_timeout": _SHELL_CLOSE_TIMEOUT,
                                  "compression": None, "proxy": None}
        try:
            if address.startswith(("http://", "https://")):
                uri = "ws" + address.removeprefix("http").rstrip("/") + path
                connection = await connect(uri, additional_headers=headers, **limits)
            else:
                connection = await unix_connect(address, "ws://agent" + path, additional_headers=headers,
                                                **limits)
        except InvalidStatus as exc:
            raise _agent_error(exc.response.status_code,
                               _denial_body(bytes(exc.response.body or b""))) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise HostUnavailableError(f"host agent unreachable: {exc!r}") from exc
        return _WebSocketShell(connection)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._long.aclose()
