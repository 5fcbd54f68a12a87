"""An in-process code interpreter for the fake agent: Python run with exec(), one namespace per context.

It speaks the agent's side of the code routes (CodeEvents, WIRE_PROTOCOL §5.1)
so the control plane's aggregation, SSE framing and errors can be tested
without a sandbox or a kernel.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import itertools
import json
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

from qbox.core.errors import ContextNotFoundError, QboxError
from qbox.core.timefmt import to_wire, utcnow

LANGUAGES = [{"language": "python", "aliases": ["python3", "py"], "kernelName": "python3",
              "isDefault": True}]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeInterpreter:
    def __init__(self) -> None:
        self.contexts: dict[str, dict[str, Any]] = {}
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.unavailable = False

    def _new(self, language: str, cwd: str, default: bool) -> dict[str, Any]:
        if language not in ("python", "python3", "py"):
            raise QboxError(f"language {language!r} is not supported here", code="language_not_supported",
                            status=409, details={"language": language, "supportedLanguages": ["python"]})
        cid = f"ctx_fake{next(self._ids)}"
        now = to_wire(utcnow())
        self.contexts[cid] = {"id": cid, "language": "python", "cwd": cwd, "isDefault": default,
                              "kernelName": "python3", "createdAt": now, "lastUsedAt": now, "state": "idle"}
        self._namespaces[cid] = {}
        return self.contexts[cid]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._new(body["language"], body.get("cwd", "/home/user"), default=False)

    def get(self, cid: str) -> dict[str, Any]:
        if cid not in self.contexts:
            raise ContextNotFoundError(f"no context {cid}", details={"contextId": cid})
        return self.contexts[cid]

    def restart(self, cid: str) -> dict[str, Any]:
        self.get(cid)
        self._namespaces[cid] = {}
        return self.contexts[cid]

    def delete(self, cid: str) -> None:
        self.get(cid)
        del self.contexts[cid], self._namespaces[cid]

    def _context_for(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.unavailable:
            raise QboxError("kernel still starting", code="code_interpreter_unavailable", status=503,
                            details={"transient": True})
        if body.get("contextId"):
            return self.get(body["contextId"])
        language = body.get("language") or "python"
        for context in self.contexts.values():
            if context["isDefault"] and language in ("python", "python3", "py"):
                return context
        return self._new(language, "/home/user", default=True)

    async def execute(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        context = self._context_for(body)  # errors before the stream, like the agent
        return self._run(context, body["code"])

    async def _run(self, context: dict[str, Any], code: str) -> AsyncIterator[bytes]:
        def line(event: dict[str, Any]) -> bytes:
            return json.dumps(event).encode() + b"\n"

        yield line({"kind": "started", "contextId": context["id"], "language": "python"})
        started = time.monotonic()
        namespace = self._namespaces[context["id"]]
        out, err = io.StringIO(), io.StringIO()
        result = error = None
        try:
            tree = ast.parse(code)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the fake's whole point
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307
                    if value is not None:
                        result = {"text/plain": _b64(repr(value))}
        except BaseException as exc:  # noqa: BLE001 - a code error is an event, not a failure
            error = {"name": type(exc).__name__, "value": str(exc),
                     "traceback": traceback.format_exception_only(exc)}
        for stream, buffer in (("stdout", out), ("stderr", err)):
            if buffer.getvalue():
                yield line({"kind": "output", "output": {"stream": stream, "text": buffer.getvalue()}})
        if "display" in namespace:
            yield line({"kind": "output", "output": {"display": namespace.pop("display")}})
        if result is not None:
            yield line({"kind": "result", "result": result})
        if error is not None:
            yield line({"kind": "error", "error": error})
        if "break_stream" not in namespace:
            yield line({"kind": "complete", "executionMs": int((time.monotonic() - started) * 1000),
                        "timedOut": False})
