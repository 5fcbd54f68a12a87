"""Host execute events → the wire's CodeEvents (WIRE_PROTOCOL.md §5.1).

The host's lines are untrusted: fields of the wrong type are dropped or
replaced, never passed on as they came.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from qbox.agent.interpreter.contexts import Context
from qbox.agent.interpreter.host import HostGone

CodeEvent = dict[str, Any]
# Names of the error event when the host refuses an execution it had accepted.
FAIL_NAMES = {"context_dead": "KernelDied", "context_not_found": "ContextNotFound"}


def _mime_bundle(data: object) -> dict[str, str]:
    # Values must be base64 strings (the SDK drops anything else); the host encodes them.
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def error_event(name: str, value: str, traceback: list[str] | None = None) -> CodeEvent:
    return {"kind": "error", "error": {"name": name, "value": value,
                                        "traceback": list(traceback or [])}}


def complete_event(execution_ms: int, timed_out: bool) -> CodeEvent:
    return {"kind": "complete", "executionMs": max(0, execution_ms), "timedOut": timed_out}


def code_event(message: dict[str, Any]) -> CodeEvent | None:
    """The CodeEvent for one non-final host event; None for what the wire has no place for."""
    event = message.get("event")
    if event == "stream":
        stream = "stderr" if message.get("stream") == "stderr" else "stdout"
        text = message.get("text")
        return {"kind": "output", "output": {"stream": stream,
                                             "text": text if isinstance(text, str) else ""}}
    if event == "display":
        bundle = _mime_bundle(message.get("data"))
        return {"kind": "output", "output": {"display": bundle}} if bundle else None
    if event == "result":
        return {"kind": "result", "result": _mime_bundle(message.get("data"))}
    if event == "error":
        error = message.get("error")
        error = error if isinstance(error, dict) else {}
        traceback = error.get("traceback")
        lines = [str(t) for t in traceback] if isinstance(traceback, list) else []
        return error_event(str(error.get("name") or "Error"), str(error.get("value") or ""),
                           lines)
    return None


async def code_events(context: Context, events: AsyncIterable[dict[str, Any] | HostGone],
                      began: float) -> AsyncGenerator[CodeEvent, None]:
    """The CodeEvents of one execution: ``started``, what the host sent, ``complete`` last
    (also when the host refused the execution or exited during it)."""
    def elapsed() -> int:
        return int((time.monotonic() - began) * 1000)

    yield {"kind": "started", "contextId": context.id, "language": context.language}
    try:
        async for message in events:
            if isinstance(message, HostGone):
                yield error_event("KernelHostDied", str(message))
                yield complete_event(elapsed(), False)
                return
            kind = message.get("event")
            if kind == "done":
                ms = message.get("executionMs")
                yield complete_event(ms if isinstance(ms, int) else elapsed(),
                                     message.get("timedOut") is True)
                return
            if kind in ("fail", "ok"):
                code = str(message.get("code") or "failed")
                yield error_event(FAIL_NAMES.get(code, "ExecutionFailed"),
                                  str(message.get("message") or code))
                yield complete_event(elapsed(), False)
                return
            event = code_event(message)
            if event is not None:
                yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
