"""The code interpreter: ``/sandboxes/{id}/code/…`` (languages, contexts, execute).

An execution answers NDJSON, one ``CodeEvent`` a line, ``complete`` last: the
payloads of the public SSE stream (WIRE_PROTOCOL.md §5.1).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from qbox.protocol.wire import Wire, WireTime


class Language(Wire):
    language: str
    aliases: list[str] = Field(default_factory=list)
    kernel_name: str
    is_default: bool = False


class Languages(Wire):
    # The default (python when there is one) first.
    languages: list[Language]


class Context(Wire):
    id: str
    language: str
    cwd: str
    is_default: bool
    kernel_name: str
    created_at: WireTime
    last_used_at: WireTime | None
    state: Literal["starting", "idle", "busy", "dead"]


class Contexts(Wire):
    # Oldest first.
    contexts: list[Context]


class ContextCreate(Wire):
    OMIT_NONE = frozenset({"language", "cwd"})

    language: str | None = None
    # An absolute path in the sandbox; none: the user's home.
    cwd: str | None = None


class CodeExecute(Wire):
    """Runs in ``contextId``, or else in the default context of ``language``."""

    OMIT_NONE = frozenset({"context_id", "language", "env", "timeout_seconds"})

    code: str
    context_id: str | None = None
    language: str | None = None
    # Set for this execution only.
    env: dict[str, str] | None = None
    # Clients send whole seconds (0.5 arrives as 0): 0 or none means no limit.
    timeout_seconds: float | None = Field(default=None, ge=0)


# --- CodeEvents ----------------------------------------------------------------

# A MIME bundle: mime type -> base64 text.
MimeBundle = dict[str, str]


class CodeOutput(Wire):
    """Text on a stream, or a display bundle."""

    OMIT_NONE = frozenset({"stream", "text", "display"})

    stream: Literal["stdout", "stderr"] | None = None
    text: str | None = None
    display: MimeBundle | None = None


class CodeError(Wire):
    name: str
    value: str
    traceback: list[str] = Field(default_factory=list)


class StartedCodeEvent(Wire):
    kind: Literal["started"] = "started"
    context_id: str
    language: str


class OutputCodeEvent(Wire):
    kind: Literal["output"] = "output"
    output: CodeOutput


class ResultCodeEvent(Wire):
    kind: Literal["result"] = "result"
    result: MimeBundle


class ErrorCodeEvent(Wire):
    kind: Literal["error"] = "error"
    error: CodeError


class CompleteCodeEvent(Wire):
    kind: Literal["complete"] = "complete"
    execution_ms: int
    timed_out: bool


CodeEventBody = (StartedCodeEvent | OutputCodeEvent | ResultCodeEvent | ErrorCodeEvent
                 | CompleteCodeEvent)
CodeEvent = Annotated[CodeEventBody, Field(discriminator="kind")]
CODE_EVENT: TypeAdapter[CodeEventBody] = TypeAdapter(CodeEvent)
