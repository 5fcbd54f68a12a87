"""The code interpreter below the routes: the host client's framing, bounded waits,
disconnects, shutdown; languages and event translation (fake kernel host, no root)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import qbox.agent.interpreter.manager as manager_module
from qbox.agent.app import create_app
from qbox.agent.images.kernelspecs import KernelSpecInfo
from qbox.agent.interpreter.contexts import ContextState
from qbox.agent.interpreter.events import code_event
from qbox.agent.interpreter.host import split_lines
from qbox.agent.interpreter.languages import languages_of, resolve, specs_from_host
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.errors import CodeInterpreterUnavailableError, LanguageNotSupportedError
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.conftest import SECRET
from tests.unit.agent.fakes import FakeImageStore
from tests.unit.agent.interpreter_fixtures import (
    FAKE_HOST,
    CodeAgent,
    CopyingFilesystem,
    add_kernelspec,
    make_code_agent_fixture,
    text_of,
)

code_agent = make_code_agent_fixture()
slow_agent = make_code_agent_fixture(ready_wait=0.3)


# --- framing ---------------------------------------------------------------------

def test_split_lines_keeps_partial_lines_for_the_next_chunk() -> None:
    buffer = bytearray()
    lines, discarding = split_lines(buffer, b'{"a": 1}\n{"b"', discarding=False)
    assert lines == [b'{"a": 1}'] and not discarding and bytes(buffer) == b'{"b"'
    lines, discarding = split_lines(buffer, b': 2}\n', discarding=False)
    assert lines == [b'{"b": 2}'] and bytes(buffer) == b""


def test_split_lines_drops_an_oversized_line_whole() -> None:
    buffer = bytearray()
    lines, discarding = split_lines(buffer, b"x" * 20, discarding=False, limit=16)
    assert lines == [] and discarding and not buffer
    lines, discarding = split_lines(buffer, b"yyy\nok\nrest", discarding=discarding, limit=16)
    assert lines == [b"ok"] and not discarding and bytes(buffer) == b"rest"


# --- languages and events ----------------------------------------------------------

def _spec(name: str, language: str) -> KernelSpecInfo:
    return KernelSpecInfo(name, language, name)


def test_languages_prefer_the_usual_kernel_and_default_to_python() -> None:
    languages = languages_of([_spec("python3-venv", "python"), _spec("python3", "python"),
                              _spec("ir", "r")])
    assert [(lang.language, lang.kernel_name, lang.is_default) for lang in languages] == [
        ("python", "python3", True), ("r", "ir", False)]
    assert languages[1].aliases == ("ir",)  # a kernel's name works as a name too
    assert resolve(languages, "IR").language == "r"
    assert resolve(languages, None).language == "python"
    with pytest.raises(LanguageNotSupportedError) as info:
        resolve(languages, "cobol")
    assert info.value.details == {"language": "cobol", "supportedLanguages": ["python", "r"]}
    assert info.value.status == 409


def test_without_python_the_first_language_is_the_default() -> None:
    languages = languages_of([_spec("bash", "bash"), _spec("deno", "typescript")])
    assert [lang.language for lang in languages if lang.is_default] == ["bash"]
    assert languages_of([]) == []


def test_the_hosts_kernel_list_is_checked() -> None:
    specs = specs_from_host([{"name": "python3", "language": "Python"}, "junk",
                             {"name": 3, "language": "x"}, {"name": "b"}])
    assert specs == [KernelSpecInfo("python3", "python", "python3")]
    assert specs_from_host({"not": "a list"}) == []


def test_host_events_are_translated_defensively() -> None:
    assert code_event({"event": "display", "data": {"image/png": "AAA=", "bad": {"x": 1}}}) == {
        "kind": "output", "output": {"display": {"image/png": "AAA="}}}
    assert code_event({"event": "display", "data": "nope"}) is None
    assert code_event({"event": "stream", "stream": "weird", "text": 5}) == {
        "kind": "output", "output": {"stream": "stdout", "text": ""}}
    assert code_event({"event": "error", "error": {"name": "E", "traceback": "x"}}) == {
        "kind": "error", "error": {"name": "E", "value": "", "traceback": []}}
    assert code_event({"event": "mystery"}) is None


# --- the interpreter ---------------------------------------------------------------

async def test_a_client_going_away_interrupts_the_cell_and_leaks_nothing(
        code_agent: CodeAgent) -> None:
    sandbox_id = await code_agent.create()
    code = code_agent.manager.code(sandbox_id)
    context = await code.context_for(None, None)
    events = (await code.execute(context, "print a\nsleep 30\nincr\nprint b")).__aiter__()
    assert (await anext(events))["kind"] == "started"
    assert (await anext(events))["output"]["text"] == "a\n"
    await events.aclose()  # the HTTP client disconnected
    assert context.state is ContextState.BUSY
    # Queued behind the abandoned execution, which was interrupted before ``incr``.
    after = [e async for e in await code.execute(context, "get")]
    assert {"kind": "result", "result": {"text/plain": "MA=="}} in after
    assert context.host is not None and context.host.pending_count == 0
    assert context.state is ContextState.IDLE and context.running == 0


async def test_a_slow_host_answers_unavailable_then_works(slow_agent: CodeAgent) -> None:
    sandbox_id = await slow_agent.create(envs={"FAKE_READY_DELAY": "1.5"})
    r = await slow_agent.execute(sandbox_id, code="print 1")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "code_interpreter_unavailable" and error["details"]["transient"]
    code = slow_agent.manager.code(sandbox_id)
    [context] = await code.contexts()
    assert context.started is not None
    await context.started  # the start went on in the background
    assert text_of(await slow_agent.events(sandbox_id, code="print 1")) == "1\n"


async def test_a_slow_kernel_makes_a_new_context_answer_starting(slow_agent: CodeAgent) -> None:
    sandbox_id = await slow_agent.create(envs={"FAKE_START_DELAY": "1"})
    r = await slow_agent.client.post(f"/sandboxes/{sandbox_id}/code/contexts",
                                     json={"language": "bash"})
    assert r.status_code == 200 and r.json()["state"] == "starting"
    context = next(c for c in await slow_agent.manager.code(sandbox_id).contexts()
                   if c.id == r.json()["id"])
    assert context.started is not None
    await context.started
    assert text_of(await slow_agent.events(sandbox_id, code="print ok",
                                           contextId=context.id)) == "ok\n"


async def test_a_host_that_cannot_start_says_why(code_agent: CodeAgent,
                                                 tmp_path: Path) -> None:
    broken = tmp_path / "broken_host.py"
    broken.write_text("import sys\nsys.stderr.write('No module named jupyter_client\\n')\n"
                      "sys.exit(1)\n")
    code_agent.manager.interpreters.host_argv = (sys.executable, str(broken))
    sandbox_id = await code_agent.create()
    for _ in range(2):  # every use tries again
        r = await code_agent.execute(sandbox_id, code="print 1")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "code_interpreter_unavailable"
        assert "No module named jupyter_client" in r.json()["error"]["message"]
    starts = [s for cid, s in code_agent.runtime.execs if cid == sandbox_id]
    assert len(starts) >= 2


async def test_agent_shutdown_closes_the_hosts_stdin(code_agent: CodeAgent,
                                                     tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    sandbox_id = await code_agent.create(envs={"FAKE_LOG": str(log)})
    await code_agent.events(sandbox_id, code="print 1")
    await code_agent.manager.interpreters.close()
    assert log.read_text().splitlines()[-1] == "closed"  # it shut down on its own


def test_unavailable_is_transient_by_default() -> None:
    assert CodeInterpreterUnavailableError("x").transient
    assert CodeInterpreterUnavailableError("x").to_wire()["error"]["details"] == {
        "transient": True}


async def test_eager_sandboxes_found_after_an_agent_restart_are_warmed_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Set before the agent starts: loading the sandboxes starts their hosts at once.
    monkeypatch.setattr(manager_module, "HOST_ARGV", (sys.executable, str(FAKE_HOST)))
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False)
    runtime = FakeRuntime()
    store = FakeImageStore(tmp_path / "images")
    digest = store.add("kernels")
    add_kernelspec(store.rootfs_path(digest), "python3", "python")

    async def contexts_after_start() -> list[Any]:
        app = create_app(settings, runtime=runtime, store=store, filesystem=CopyingFilesystem())
        async with app.router.lifespan_context(app):
            manager: SandboxManager = app.state.agent.sandboxes
            if not list(manager):
                async with httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://a/internal/v1",
                        headers={"Authorization": f"Bearer {SECRET}"}) as client:
                    r = await client.post("/sandboxes", json={
                        "id": new_sandbox_id(), "imageDigest": digest, "vcpus": 1,
                        "memoryMb": 256, "codeInterpreter": "eager"})
                    assert r.status_code == 201
            [sandbox] = list(manager)
            code = manager.code(sandbox.id)
            assert code.warming is not None
            await code.warming  # started in the background, before any request
            [context] = await code.contexts()
            return [context.id, context.state]

    first = await contexts_after_start()
    again = await contexts_after_start()
    assert first[1] is again[1] is ContextState.IDLE
    assert first[0] != again[0]  # contexts live in the agent: a new default
    hosts = [spec for _, spec in runtime.execs if spec.args[-1] == str(FAKE_HOST)]
    assert len(hosts) == 2


def test_the_guest_directory_is_bound_read_only_in_every_sandbox() -> None:
    from qbox.agent.interpreter.manager import GUEST_SOURCE
    from qbox.agent.runtime.runsc_spec import spec_for_runsc
    from tests.unit.agent.test_spec import _config

    config = _config(guest_source=GUEST_SOURCE)
    [mount] = [m for m in config["mounts"] if m["destination"] == "/.qbox/guest"]
    assert mount["source"] == str(GUEST_SOURCE) and mount["type"] == "bind"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mount["options"])
    assert mount in spec_for_runsc(config, Path("/data/sb"), bind_tmp=False)["mounts"]
    assert not any(m["destination"] == "/.qbox/guest" for m in _config()["mounts"])
