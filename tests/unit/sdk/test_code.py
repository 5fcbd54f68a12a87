"""The code interpreter: ``run_code`` (unary and streamed), ``run_code_stream`` and contexts,
against a scripted API (WIRE_PROTOCOL.md §4.5, §5.1)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox import (
    AsyncSandbox,
    CodeContext,
    CodeInterpreterDisabledError,
    CodeInterpreterUnavailableError,
    ConnectionFailedError,
    ContextNotFoundError,
    Execution,
    ExecutionDone,
    ExecutionError,
    ExecutionRaisedError,
    ExecutionStarted,
    InvalidArgumentError,
    LanguageNotSupportedError,
    Result,
    Sandbox,
    SandboxNotActiveError,
    StreamOutput,
)
from qbox.sdk import _transport
from tests.unit.sdk.fakes import FakeClock, FakeServer, error, reply, sandbox

SB = "/v1/sandboxes/sb_1"
EXECUTE = SB + "/code-execute"
CONTEXTS = SB + "/code-contexts"
PNG = b"\x89PNG\r\n\x1a\nfake-image"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def connect(server: FakeServer) -> tuple[Sandbox, FakeClock]:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    config = server.config()
    return Sandbox.connect("sb_1", config=config), config.clock  # type: ignore[return-value]


def unary(**extra: Any) -> dict[str, Any]:
    return {
        "contextId": "ctx_py",
        "language": "python",
        "outputs": [
            {"stream": "stdout", "text": "hello\n"},
            {"stream": "stderr", "text": "careful\n"},
            {"display": {"image/png": b64(PNG), "text/plain": b64("<Figure>")}},
            {"text": "no stream means stdout\n"},
        ],
        "result": {"text/plain": b64("42"), "application/json": b64('{"answer": 42}')},
        "error": None,
        "executionMs": 12,
        "timedOut": False,
        **extra,
    }


def frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['kind']}\ndata: {json.dumps(event)}\n\n".encode()


STARTED = {"kind": "started", "contextId": "ctx_py", "language": "python"}
OUT = {"kind": "output", "output": {"stream": "stdout", "text": "1\n"}}
ERR = {"kind": "output", "output": {"stream": "stderr", "text": "warn\n"}}
DISPLAY = {"kind": "output", "output": {"display": {"image/png": b64(PNG)}}}
RESULT = {"kind": "result", "result": {"text/plain": b64("2")}}
RAISED = {"kind": "error", "error": {"name": "ZeroDivisionError", "value": "division by zero",
                                     "traceback": ["Traceback", "  line 1"]}}
COMPLETE = {"kind": "complete", "executionMs": 7, "timedOut": False}


def sse(*events: dict[str, Any]) -> httpx.Response:
    body = b": hello\n\n" + b"".join(frame(e) for e in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)


# --- unary -------------------------------------------------------------------


def test_run_code_without_callbacks_is_one_json_request(server: FakeServer) -> None:
    server.on("POST", EXECUTE, reply(200, unary()))
    sb, _ = connect(server)
    execution = sb.run_code("print('hello'); 6 * 7", env={"A": "1"})
    seen = server.last("POST", EXECUTE)
    assert seen.body == {"code": "print('hello'); 6 * 7", "env": {"A": "1"}, "timeoutSeconds": 60}
    assert seen.headers["accept"] == "application/json"
    assert seen.timeout["read"] == 75  # the code's 60 s plus time for the answer
    assert execution.text == "42"
    assert execution.logs.stdout == ["hello\n", "no stream means stdout\n"]
    assert execution.logs.stderr == ["careful\n"]
    display, main = execution.results
    assert display == Result({"image/png": PNG, "text/plain": b"<Figure>"}, is_main_result=False)
    assert display.png == PNG and display.text == "<Figure>"
    assert main.is_main_result and main.json == {"answer": 42}
    assert (execution.context_id, execution.language) == ("ctx_py", "python")
    assert (execution.execution_ms, execution.timed_out, execution.error) == (12, False, None)
    assert execution.ok


def test_language_context_and_timeout_are_sent_as_given(server: FakeServer) -> None:
    server.on("POST", EXECUTE, reply(200, unary()))
    sb, _ = connect(server)
    sb.run_code("ls", "bash", timeout=2.5)
    assert server.last("POST", EXECUTE).body == {"code": "ls", "language": "bash", "timeoutSeconds": 3}
    sb.run_code("x", context=CodeContext("ctx_9"), timeout=None)
    seen = server.last("POST", EXECUTE)
    assert seen.body == {"code": "x", "contextId": "ctx_9"}
    assert seen.timeout["read"] is None  # no limit on the code: none on its answer
    sb.run_code("x", context="ctx_8")
    assert server.last("POST", EXECUTE).body["contextId"] == "ctx_8"


def test_language_and_context_together_are_refused_before_any_request(server: FakeServer) -> None:
    sb, _ = connect(server)
    with pytest.raises(InvalidArgumentError):
        sb.run_code("x", "python", "ctx_1")
    with pytest.raises(ValueError):
        sb.run_code("x", timeout=0)
    assert server.targets == [f"GET {SB}"]


def test_mime_values_are_base64_decoded_leniently(server: FakeServer) -> None:
    bundle = {
        "text/plain": b64("abcd"),  # would be garbage if read as plain text
        "text/html": "<b>not base64</b>",
        "application/json": {"an": "object"},
        "image/svg+xml": b64("<svg/>")[:4] + "\n" + b64("<svg/>")[4:],  # wrapped base64
        "application/x-weird": 5,
    }
    server.on("POST", EXECUTE, reply(200, {"outputs": [], "result": bundle}))
    sb, _ = connect(server)
    (result,) = sb.run_code("x").results
    assert result.text == "abcd"
    assert result.html == "<b>not base64</b>"
    assert result.json == {"an": "object"}
    assert result.svg == "<svg/>"
    assert sorted(result.formats()) == ["application/json", "image/svg+xml", "text/html", "text/plain"]


def test_an_empty_answer_is_an_empty_execution(server: FakeServer) -> None:
    server.on("POST", EXECUTE, reply(200, {"outputs": None, "result": None}))
    sb, _ = connect(server)
    execution = sb.run_code("pass")
    assert execution == Execution()
    assert execution.text is None


def test_a_code_error_is_returned_not_raised(server: FakeServer) -> None:
    wire_error = {"name": "NameError", "value": "name 'x' is not defined", "traceback": ["Traceback", "NameError"]}
    server.on("POST", EXECUTE, reply(200, unary(result=None, error=wire_error)))
    sb, _ = connect(server)
    execution = sb.run_code("x")
    assert execution.error == ExecutionError("NameError", "name 'x' is not defined", ["Traceback", "NameError"])
    assert str(execution.error) == "NameError: name 'x' is not defined"
    assert not execution.ok and execution.text is None
    with pytest.raises(ExecutionRaisedError) as raised:
        sb.run_code("x", raise_on_error=True)
    assert raised.value.execution.error == execution.error
    assert raised.value.execution.logs.stdout == ["hello\n", "no stream means stdout\n"]
    assert "NameError" in str(raised.value)


def test_a_timeout_raises_only_when_asked(server: FakeServer) -> None:
    server.on("POST", EXECUTE, reply(200, unary(result=None, timedOut=True, executionMs=60000)))
    sb, _ = connect(server)
    assert sb.run_code("while True: pass").timed_out
    with pytest.raises(ExecutionRaisedError, match="out of time"):
        sb.run_code("while True: pass", raise_on_error=True)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(422, "code_interpreter_disabled"), CodeInterpreterDisabledError),
        (error(404, "context_not_found"), ContextNotFoundError),
        (error(409, "sandbox_not_active", details={"currentState": "killed"}), SandboxNotActiveError),
        (error(409, "invalid_argument"), InvalidArgumentError),
    ],
)
def test_request_errors_are_typed(server: FakeServer, answer: httpx.Response, expected: type) -> None:
    server.on("POST", EXECUTE, answer)
    sb, _ = connect(server)
    with pytest.raises(expected):
        sb.run_code("x")
    with pytest.raises(expected):
        sb.run_code("x", on_stdout=print)


def test_an_unsupported_language_says_which_are(server: FakeServer) -> None:
    details = {"language": "cobol", "supportedLanguages": ["python", "bash"]}
    server.on("POST", EXECUTE, error(409, "language_not_supported", details=details))
    sb, _ = connect(server)
    with pytest.raises(LanguageNotSupportedError) as raised:
        sb.run_code("x", "cobol")
    assert raised.value.details["supportedLanguages"] == ["python", "bash"]


def test_an_interpreter_still_starting_is_waited_for(server: FakeServer) -> None:
    server.on("POST", EXECUTE, error(503, "code_interpreter_unavailable"), reply(200, unary()))
    sb, clock = connect(server)
    assert sb.run_code("x").text == "42"
    assert len(clock.sleeps) == 1
    assert server.targets.count(f"POST {EXECUTE}") == 2


def test_a_bare_503_is_not_retried_so_code_never_runs_twice(server: FakeServer) -> None:
    server.on("POST", EXECUTE, error(503, "unavailable"), reply(200, unary()))
    sb, clock = connect(server)
    with pytest.raises(Exception, match="nope"):
        sb.run_code("x")
    assert clock.sleeps == []


# --- streamed ----------------------------------------------------------------


def test_callbacks_stream_and_hear_every_event_in_order(server: FakeServer) -> None:
    server.on("POST", EXECUTE, sse(STARTED, OUT, ERR, DISPLAY, RESULT, COMPLETE))
    sb, _ = connect(server)
    heard: list[Any] = []
    execution = sb.run_code(
        "print(1)",
        on_stdout=lambda text: heard.append(("out", text)),
        on_stderr=lambda text: heard.append(("err", text)),
        on_result=lambda result: heard.append(("result", result.is_main_result)),
    )
    seen = server.last("POST", EXECUTE)
    assert seen.body == {"code": "print(1)", "timeoutSeconds": 60, "stream": True}
    assert seen.headers["accept"] == "text/event-stream"
    assert heard == [("out", "1\n"), ("err", "warn\n"), ("result", False), ("result", True)]
    assert execution.text == "2"
    assert execution.results[0].png == PNG
    assert execution.logs.stdout == ["1\n"] and execution.logs.stderr == ["warn\n"]
    assert (execution.context_id, execution.language, execution.execution_ms) == ("ctx_py", "python", 7)


def test_callbacks_run_as_each_chunk_arrives(server: FakeServer) -> None:
    timeline: list[str] = []

    def chunks() -> Iterator[bytes]:
        for event in (STARTED, OUT, {**OUT, "output": {"stream": "stdout", "text": "2\n"}}, COMPLETE):
            timeline.append(f"sent {event['kind']}")
            yield frame(event)

    server.on("POST", EXECUTE, lambda _request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=chunks()))
    sb, _ = connect(server)
    sb.run_code("x", on_stdout=lambda text: timeline.append(f"heard {text.strip()}"))
    assert timeline == ["sent started", "sent output", "heard 1", "sent output", "heard 2", "sent complete"]


def test_an_error_event_reaches_on_error_and_can_raise(server: FakeServer) -> None:
    server.on("POST", EXECUTE, sse(STARTED, OUT, RAISED, COMPLETE))
    sb, _ = connect(server)
    errors: list[ExecutionError] = []
    execution = sb.run_code("1/0", on_error=errors.append)
    assert errors == [ExecutionError("ZeroDivisionError", "division by zero", ["Traceback", "  line 1"])]
    assert execution.error == errors[0]
    with pytest.raises(ExecutionRaisedError) as raised:
        sb.run_code("1/0", on_stdout=lambda _text: None, raise_on_error=True)
    assert raised.value.execution.logs.stdout == ["1\n"]


def test_run_code_stream_yields_events_ending_with_done(server: FakeServer) -> None:
    server.on("POST", EXECUTE, sse(STARTED, OUT, DISPLAY, RAISED, {"kind": "unknown"}, RESULT, COMPLETE))
    sb, _ = connect(server)
    events = list(sb.run_code_stream("x", "python"))
    assert events == [
        ExecutionStarted("ctx_py", "python"),
        StreamOutput("stdout", "1\n"),
        Result({"image/png": PNG}),
        ExecutionError("ZeroDivisionError", "division by zero", ["Traceback", "  line 1"]),
        Result({"text/plain": b"2"}, is_main_result=True),
        ExecutionDone(7, False),
    ]
    assert server.last("POST", EXECUTE).body == {"code": "x", "language": "python", "timeoutSeconds": 60,
                                                 "stream": True}


def test_stopping_a_stream_early_closes_it(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    original = _transport.ByteStream.close
    monkeypatch.setattr(_transport.ByteStream, "close", lambda self: (closed.append(True), original(self)))
    server.on("POST", EXECUTE, sse(STARTED, OUT, COMPLETE))
    sb, _ = connect(server)
    for event in sb.run_code_stream("x"):
        assert isinstance(event, ExecutionStarted)
        break
    assert closed


def test_a_stream_is_retried_only_before_it_opens(server: FakeServer) -> None:
    server.on("POST", EXECUTE, error(503, "code_interpreter_unavailable"), sse(STARTED, OUT, COMPLETE))
    sb, clock = connect(server)
    assert [type(e) for e in sb.run_code_stream("x")] == [ExecutionStarted, StreamOutput, ExecutionDone]
    assert len(clock.sleeps) == 1
    server.on("POST", EXECUTE, error(503, "code_interpreter_unavailable"))
    server.routes[("POST", EXECUTE)] = [error(503, "code_interpreter_unavailable")]
    with pytest.raises(CodeInterpreterUnavailableError):
        list(sb.run_code_stream("x"))
    assert len(clock.sleeps) == 1 + 3  # QBOX_MAX_RETRIES


def test_a_stream_that_ends_before_complete_is_an_error(server: FakeServer) -> None:
    server.on("POST", EXECUTE, sse(STARTED, OUT))
    sb, _ = connect(server)
    heard: list[str] = []
    with pytest.raises(ConnectionFailedError, match="before the execution completed"):
        sb.run_code("x", on_stdout=heard.append)
    assert heard == ["1\n"]


def test_a_server_answering_json_to_a_stream_request_still_works(server: FakeServer) -> None:
    server.on("POST", EXECUTE, reply(200, unary()))
    sb, _ = connect(server)
    heard: list[str] = []
    execution = sb.run_code("x", on_stdout=heard.append)
    assert heard == ["hello\n", "no stream means stdout\n"]
    assert execution.text == "42" and execution.context_id == "ctx_py"


# --- results -----------------------------------------------------------------


def test_result_accessors_and_save(tmp_path: Path) -> None:
    result = Result({"image/jpeg": b"jpg", "image/svg+xml": b"<svg/>", "text/markdown": b"# hi"})
    assert result.png is None and result.jpeg == b"jpg" and result.markdown == "# hi"
    assert result.save(tmp_path / "a.jpg") == tmp_path / "a.jpg"
    assert (tmp_path / "a.jpg").read_bytes() == b"jpg"
    Result({"image/png": PNG, "image/jpeg": b"jpg"}).save(tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == PNG
    with pytest.raises(ValueError, match="no image"):
        Result({"text/plain": b"1"}).save(tmp_path / "c")
    assert Result({"application/json": b"{nope"}).json is None


# --- contexts ----------------------------------------------------------------


def context(cid: str = "ctx_1", **extra: Any) -> dict[str, Any]:
    return {"id": cid, "language": "python", "cwd": "/home/user", "isDefault": False, "kernelName": "python3",
            "state": "idle", "createdAt": "2026-01-02T03:04:05.000000Z", "lastUsedAt": None, **extra}


def test_contexts(server: FakeServer) -> None:
    server.on("POST", CONTEXTS, reply(201, context()))
    server.on("GET", CONTEXTS, reply(200, {"contexts": [context("ctx_0", isDefault=True), context()]}))
    server.on("POST", CONTEXTS + "/ctx_1/restart", reply(200, context(state="starting")))
    server.on("DELETE", CONTEXTS + "/ctx_1", reply(204))
    sb, _ = connect(server)
    created = sb.code_contexts.create("python", cwd="/srv")
    assert server.last("POST", CONTEXTS).body == {"language": "python", "cwd": "/srv"}
    assert (created.id, created.kernel_name, created.state, created.last_used_at) == ("ctx_1", "python3", "idle", None)
    assert created.created_at is not None and created.created_at.year == 2026
    assert [c.id for c in sb.code_contexts.list()] == ["ctx_0", "ctx_1"]
    assert sb.code_contexts.get("ctx_0").is_default
    with pytest.raises(ContextNotFoundError):
        sb.code_contexts.get("ctx_nope")
    assert sb.code_contexts.restart(created).state == "starting"
    restart = server.last("POST", CONTEXTS + "/ctx_1/restart")
    assert restart.body is None and restart.headers["content-length"] == "0"
    assert "content-type" not in restart.headers
    sb.code_contexts.remove("ctx_1")
    assert server.targets[-1] == f"DELETE {CONTEXTS}/ctx_1"


def test_an_empty_context_list_and_languages(server: FakeServer) -> None:
    server.on("GET", CONTEXTS, reply(204))
    languages = [{"language": "python", "aliases": ["py", "python3"], "kernelName": "python3", "isDefault": True},
                 {"language": "bash", "aliases": None, "kernelName": "bash"}]
    server.on("GET", SB + "/code-languages", reply(200, {"languages": languages}))
    sb, _ = connect(server)
    assert sb.code_contexts.list() == []
    python, bash = sb.code_contexts.languages()
    assert (python.language, python.aliases, python.is_default) == ("python", ["py", "python3"], True)
    assert (bash.aliases, bash.is_default) == ([], False)


def test_removing_an_unknown_context_raises(server: FakeServer) -> None:
    server.on("DELETE", CONTEXTS + "/ctx_x", error(404, "context_not_found"))
    sb, _ = connect(server)
    with pytest.raises(ContextNotFoundError):
        sb.code_contexts.remove("ctx_x")


# --- async -------------------------------------------------------------------


async def test_async_run_code_unary_and_streamed(server: FakeServer) -> None:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    server.on("POST", EXECUTE, reply(200, unary()), sse(STARTED, OUT, RESULT, COMPLETE))
    sb = await AsyncSandbox.connect("sb_1", config=server.config())
    assert (await sb.run_code("x")).text == "42"
    heard: list[str] = []
    streamed = await sb.run_code("x", on_stdout=heard.append)
    assert heard == ["1\n"] and streamed.text == "2"
    events = [event async for event in sb.run_code_stream("x")]
    assert [type(e) for e in events] == [ExecutionStarted, StreamOutput, Result, ExecutionDone]
    await sb.close()


async def test_async_code_errors_and_contexts(server: FakeServer) -> None:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    server.on("POST", EXECUTE, sse(STARTED, RAISED, COMPLETE))
    server.on("GET", CONTEXTS, reply(200, {"contexts": [context()]}))
    server.on("POST", CONTEXTS, reply(201, context("ctx_2")))
    sb = await AsyncSandbox.connect("sb_1", config=server.config())
    with pytest.raises(ExecutionRaisedError):
        await sb.run_code("1/0", on_stderr=print, raise_on_error=True)
    assert (await sb.code_contexts.create("python")).id == "ctx_2"
    assert (await sb.code_contexts.get("ctx_1")).language == "python"
    with pytest.raises(ContextNotFoundError):
        await sb.code_contexts.get("ctx_9")
    await sb.close()
