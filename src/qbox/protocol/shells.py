"""``GET /sandboxes/{id}/shell``: a WebSocket onto a sandbox PTY.

The query's rules (and the client frames, which travel verbatim) are
``qbox.core.shell_protocol``'s, shared with the public route. Refusals come
before the upgrade as an error answer; after it the agent closes with one of
the codes below.
"""

from __future__ import annotations

from pydantic import Field

from qbox.core.shell_protocol import MAX_DIMENSION
from qbox.protocol.wire import Wire

# WebSocket close codes (RFC 6455) the agent ends a shell with.
CLOSE_NORMAL = 1000  # the shell exited; the reason is ``exit_reason(code)``
CLOSE_INVALID_DATA = 1007  # a text frame that is not one of the protocol's


def exit_reason(exit_code: int) -> str:
    """The close reason of a shell that exited (128 + signo for a signal)."""
    return f"exit {exit_code}"


class ShellQuery(Wire):
    OMIT_NONE = frozenset({"command", "user"})

    cols: int = Field(default=80, ge=1, le=MAX_DIMENSION)
    rows: int = Field(default=24, ge=1, le=MAX_DIMENSION)
    # Run this command line in the user's login shell instead of an interactive one.
    command: str | None = None
    user: str | None = None
