"""What ``Shell`` and ``AsyncShell`` share: the upgrade request, the frames, the close reason, the errors.

The shell is a WebSocket (``GET /v1/sandboxes/{id}/shell``, WIRE_PROTOCOL §6):
JSON text frames ``input``/``resize`` or binary raw input go up, binary frames of
raw terminal output come down, and the server closes with 1000 ``exit N`` when
the shell exits. A refusal comes before the upgrade, as an HTTP answer carrying
the usual JSON error envelope, and becomes the same ``QboxError`` as for any
other request. Nothing here performs I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlencode

from qbox.core.errors import ConnectionFailedError, QboxError, RequestTimeoutError
from qbox.sdk._api import Api, raise_for_status
from qbox.sdk._steps import HttpResponse

if TYPE_CHECKING:
    from websockets.frames import Close

INSTALL_HINT = "pip install 'qbox[shell]'"
MAX_MESSAGE_BYTES = 1 << 20  # output frames are at most 64 KiB
NORMAL_CLOSURE = 1000
_EXIT_REASON = re.compile(r"exit (\d+)")


def require_websockets() -> None:
    """Raise a ``QboxError`` naming the extra to install when ``websockets`` is missing."""
    try:
        import websockets  # noqa: F401
    except ImportError:
        raise QboxError(
            f"the shell needs the 'websockets' package: {INSTALL_HINT}", code="missing_dependency", status=0
        ) from None


@dataclass(frozen=True)
class ShellTarget:
    """The upgrade request: where to connect, with which headers, how long to wait for the handshake."""

    url: str
    headers: dict[str, str]
    user_agent: str
    open_timeout: float


def shell_target(
    api: Api,
    sandbox_id: str,
    cols: int,
    rows: int,
    command: str | None,
    user: str | None,
) -> ShellTarget:
    """``http(s)://host/prefix`` becomes ``ws(s)://host/prefix/v1/sandboxes/{id}/shell?cols=&rows=…``."""
    params = {"cols": cols, "rows": rows, "command": command, "user": user}
    request = api.build("GET", f"/v1/sandboxes/{sandbox_id}/shell", params=params)
    scheme, sep, rest = request.url.partition("://")
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme.lower())
    if not sep or ws_scheme is None:
        raise QboxError(f"the base URL must be http(s)://, got {api.base_url!r}", code="invalid_config", status=0)
    headers = {name: value for name, value in request.headers.items() if name.lower() not in {"user-agent", "accept"}}
    return ShellTarget(
        url=f"{ws_scheme}://{rest}?{urlencode(dict(request.params))}",
        headers=headers,
        user_agent=request.headers["User-Agent"],
        open_timeout=api.request_timeout,
    )


def input_frame(data: str | bytes) -> str | bytes:
    """Text becomes an ``input`` JSON frame; bytes go as they are, in a binary frame."""
    if isinstance(data, str):
        return json.dumps({"type": "input", "data": data})
    return bytes(data)


def resize_frame(cols: int, rows: int) -> str:
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


def output_bytes(message: str | bytes) -> bytes:
    """Output comes as binary frames; a text frame is taken as UTF-8 output too."""
    return message.encode() if isinstance(message, str) else bytes(message)


def exit_code(close: Close | None) -> int | None:
    """The shell's exit status from the server's close frame (1000 ``exit N``); None if it did not say."""
    if close is None or close.code != NORMAL_CLOSURE:
        return None
    match = _EXIT_REASON.fullmatch(close.reason)
    return int(match.group(1)) if match else None


def raise_open_error(exc: BaseException, target: ShellTarget) -> NoReturn:
    """Raise the ``QboxError`` for a failed upgrade: the refusal's own envelope, or a transport error."""
    from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

    where = target.url.partition("?")[0]
    if isinstance(exc, InvalidStatus):
        answer = exc.response
        headers = {name.lower(): value for name, value in answer.headers.raw_items()}
        refusal = HttpResponse(status=answer.status_code, headers=headers, content=bytes(answer.body or b""))
        try:
            raise_for_status(refusal)
        except QboxError as error:
            raise error from exc
        raise ConnectionFailedError(f"{where} answered HTTP {answer.status_code} instead of opening a WebSocket")
    if isinstance(exc, TimeoutError):
        raise RequestTimeoutError(
            f"no WebSocket handshake from {where} within {target.open_timeout:g}s", details={"phase": "connect"}
        ) from exc
    if isinstance(exc, InvalidURI):
        raise QboxError(f"not a WebSocket URL: {where}", code="invalid_config", status=0) from exc
    if isinstance(exc, OSError | WebSocketException):
        raise ConnectionFailedError(f"could not open a shell at {where}: {exc}") from exc
    raise exc


def closed_error(close_code: int | None, close_reason: str | None) -> ConnectionFailedError:
    """For input sent after the shell's connection has closed."""
    reason = f", {close_reason!r}" if close_reason else ""
    return ConnectionFailedError(
        f"the shell's connection is closed (code {close_code}{reason})",
        details={"closeCode": close_code, "closeReason": close_reason},
    )
