"""What the code interpreter returns: results, executions, stream events and contexts.

Rich outputs travel as MIME bundles ``{mime: base64}`` (WIRE_PROTOCOL.md §4.5),
every value base64 — text too. They are decoded here, once, into raw bytes;
``Result`` then offers each format as text or bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias

from qbox.sdk._models import _int, _required, _str, _time, as_list, as_object

# The image formats ``Result.save`` writes, in order of preference.
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")


def decode_bundle(value: Any) -> dict[str, bytes]:
    """A wire MIME bundle as ``{mime: raw bytes}``.

    A value that is not base64 is kept as its UTF-8 text (a lenient server's
    plain text); a JSON object or list, as its JSON text; anything else is dropped.
    """
    if not isinstance(value, Mapping):
        return {}
    decoded: dict[str, bytes] = {}
    for mime, raw in value.items():
        if isinstance(raw, str):
            try:
                decoded[str(mime)] = base64.b64decode("".join(raw.split()), validate=True)
            except (binascii.Error, ValueError):
                decoded[str(mime)] = raw.encode("utf-8")
        elif isinstance(raw, dict | list):
            decoded[str(mime)] = json.dumps(raw).encode("utf-8")
    return decoded


@dataclass(frozen=True)
class Result:
    """A rich output: a display (``plt.show()``, ``display(df)``) or, with ``is_main_result``,
    the value of the cell's last expression. ``data`` holds every format as raw bytes."""

    data: dict[str, bytes] = field(default_factory=dict)
    is_main_result: bool = False

    def _text(self, mime: str) -> str | None:
        raw = self.data.get(mime)
        return None if raw is None else raw.decode("utf-8", "replace")

    @property
    def text(self) -> str | None:
        return self._text("text/plain")

    @property
    def html(self) -> str | None:
        return self._text("text/html")

    @property
    def markdown(self) -> str | None:
        return self._text("text/markdown")

    @property
    def latex(self) -> str | None:
        return self._text("text/latex")

    @property
    def svg(self) -> str | None:
        return self._text("image/svg+xml")

    @property
    def javascript(self) -> str | None:
        return self._text("application/javascript")

    @property
    def png(self) -> bytes | None:
        return self.data.get("image/png")

    @property
    def jpeg(self) -> bytes | None:
        return self.data.get("image/jpeg")

    @property
    def json(self) -> Any:
        """The ``application/json`` value, parsed (``None`` when absent or not JSON)."""
        raw = self.data.get("application/json")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def formats(self) -> list[str]:
        """The MIME types this result comes in."""
        return list(self.data)

    @property
    def image_mime(self) -> str | None:
        """The image format ``save`` writes: PNG, else JPEG, else SVG; ``None`` without an image."""
        return next((mime for mime in IMAGE_MIMES if mime in self.data), None)

    def save(self, path: str | Path) -> Path:
        """Write the image (PNG, else JPEG, else SVG) to ``path``; ``ValueError`` without one."""
        mime = self.image_mime
        if mime is None:
            raise ValueError(f"this result has no image (it has {', '.join(self.data) or 'nothing'})")
        target = Path(path)
        target.write_bytes(self.data[mime])
        return target


@dataclass(frozen=True)
class StreamOutput:
    """A chunk the code wrote to stdout or stderr."""

    stream: Literal["stdout", "stderr"]
    text: str


@dataclass(frozen=True)
class ExecutionError:
    """An exception the code raised (a code error, not a failed request)."""

    name: str
    value: str
    traceback: list[str] = field(default_factory=list)

    @classmethod
    def from_wire(cls, value: Any) -> ExecutionError:
        data = value if isinstance(value, dict) else {}
        lines = data.get("traceback")
        if isinstance(lines, str):
            lines = lines.splitlines()
        return cls(_str(data, "name"), _str(data, "value"), [str(x) for x in as_list(lines, "a traceback")])

    def __str__(self) -> str:
        return f"{self.name}: {self.value}" if self.value else self.name


@dataclass(frozen=True)
class ExecutionStarted:
    """The first event of a stream: which context runs the code."""

    context_id: str
    language: str = ""


@dataclass(frozen=True)
class ExecutionDone:
    """The last event of a stream."""

    execution_ms: int
    timed_out: bool = False


CodeEvent: TypeAlias = ExecutionStarted | StreamOutput | Result | ExecutionError | ExecutionDone


@dataclass(frozen=True)
class Logs:
    """What the code printed, chunk by chunk as it came."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Execution:
    """The outcome of ``run_code``: its results (displays and main result, in order),
    logs, and error. A code error is reported here, in ``error``, not raised (unless
    ``raise_on_error=True``)."""

    results: list[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: ExecutionError | None = None
    context_id: str = ""
    language: str = ""
    execution_ms: int = 0
    timed_out: bool = False

    @property
    def text(self) -> str | None:
        """The main result's ``text/plain`` (the cell's value), ``None`` without one."""
        main = next((r for r in reversed(self.results) if r.is_main_result), None)
        return None if main is None else main.text

    @property
    def ok(self) -> bool:
        """True unless the code raised or ran out of time."""
        return self.error is None and not self.timed_out


def event_from_wire(value: Any) -> CodeEvent | None:
    """A stream payload (a CodeEvent) as an event; ``None`` for kinds without one."""
    if not isinstance(value, dict):
        return None
    kind = value.get("kind")
    if kind == "started":
        return ExecutionStarted(_str(value, "contextId"), _str(value, "language"))
    if kind == "output":
        return output_from_wire(value.get("output"))
    if kind == "result":
        return Result(decode_bundle(value.get("result")), is_main_result=True)
    if kind == "error":
        return ExecutionError.from_wire(value.get("error"))
    if kind == "complete":
        return ExecutionDone(_int(value, "executionMs"), bool(value.get("timedOut")))
    return None


def output_from_wire(value: Any) -> StreamOutput | Result | None:
    """An output item: a stream chunk (``stream`` missing means stdout) or a display."""
    if not isinstance(value, dict):
        return None
    if value.get("display"):
        return Result(decode_bundle(value["display"]))
    if value.get("stream") == "stderr":
        return StreamOutput("stderr", _str(value, "text"))
    return StreamOutput("stdout", _str(value, "text"))


def events_from_unary(value: Any) -> list[CodeEvent]:
    """The unary (JSON) answer as the events a stream would have carried."""
    data = as_object(value, "an execution")
    events: list[CodeEvent] = [ExecutionStarted(_str(data, "contextId"), _str(data, "language"))]
    for item in as_list(data.get("outputs"), "execution outputs"):
        output = output_from_wire(item)
        if output is not None:
            events.append(output)
    if data.get("result"):
        events.append(Result(decode_bundle(data["result"]), is_main_result=True))
    if data.get("error"):
        events.append(ExecutionError.from_wire(data["error"]))
    events.append(ExecutionDone(_int(data, "executionMs"), bool(data.get("timedOut"))))
    return events


@dataclass
class ExecutionBuilder:
    """Collects events into an ``Execution``."""

    results: list[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: ExecutionError | None = None
    started: ExecutionStarted = field(default_factory=lambda: ExecutionStarted(""))
    done: ExecutionDone = field(default_factory=lambda: ExecutionDone(0))

    def add(self, event: CodeEvent) -> None:
        if isinstance(event, StreamOutput):
            (self.logs.stdout if event.stream == "stdout" else self.logs.stderr).append(event.text)
        elif isinstance(event, Result):
            self.results.append(event)
        elif isinstance(event, ExecutionError):
            self.error = event
        elif isinstance(event, ExecutionStarted):
            self.started = event
        else:
            self.done = event

    def build(self) -> Execution:
        return Execution(
            results=self.results,
            logs=self.logs,
            error=self.error,
            context_id=self.started.context_id,
            language=self.started.language,
            execution_ms=self.done.execution_ms,
            timed_out=self.done.timed_out,
        )


@dataclass(frozen=True)
class CodeContext:
    """An interpreter (kernel) with its own state, for one language. ``state`` is
    ``starting``, ``idle``, ``busy`` or ``dead``."""

    id: str
    language: str = ""
    cwd: str = ""
    is_default: bool = False
    kernel_name: str = ""
    state: str = ""
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> CodeContext:
        data = as_object(value, "a code context")
        return cls(
            id=_required(data, "id", "a code context"),
            language=_str(data, "language"),
            cwd=_str(data, "cwd"),
            is_default=bool(data.get("isDefault")),
            kernel_name=_str(data, "kernelName"),
            state=_str(data, "state"),
            created_at=_time(data, "createdAt"),
            last_used_at=_time(data, "lastUsedAt"),
            raw=data,
        )


@dataclass(frozen=True)
class CodeLanguage:
    """A language the sandbox's interpreter runs, and the names it answers to."""

    language: str
    aliases: list[str] = field(default_factory=list)
    kernel_name: str = ""
    is_default: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> CodeLanguage:
        data = as_object(value, "a code language")
        return cls(
            language=_str(data, "language"),
            aliases=[str(a) for a in as_list(data.get("aliases"), "language aliases")],
            kernel_name=_str(data, "kernelName"),
            is_default=bool(data.get("isDefault")),
            raw=data,
        )
