"""The guest kernel host, run as a subprocess against real kernels (ipykernel, bash_kernel)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qbox.agent.interpreter as interpreter

SCRIPT = Path(interpreter.__file__).parent / "guest" / "kernel_host.py"
TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)


class Host:
    """The kernel host as the agent sees it: JSON lines in, JSON lines out."""

    def __init__(self, jupyter_path: Path) -> None:
        env = {
            **os.environ,
            "JUPYTER_PATH": str(jupyter_path),
            "JUPYTER_DATA_DIR": str(jupyter_path / "data"),
            # As in the image: scripts get Agg, kernels must still display figures.
            "MPLBACKEND": "Agg",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.changed = threading.Condition()
        self.next_id = 100
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.changed:
                self.raw.append(raw)
                self.lines.append(json.loads(raw))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, op: str, **fields: Any) -> int:
        self.next_id += 1
        self.write((json.dumps({"id": self.next_id, "op": op, **fields}) + "\n").encode())
        return self.next_id

    def wait(self, request_id: int | None, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Every line for ``request_id`` up to and including its final answer."""

        def final() -> bool:
            return any(
                line.get("id") == request_id and line["event"] in ("ok", "fail", "done") for line in self.lines
            )

        with self.changed:
            assert self.changed.wait_for(final, timeout), f"no answer to {request_id}: {self.lines[-5:]}"
            return [line for line in self.lines if line.get("id") == request_id and "id" in line]

    def call(self, op: str, **fields: Any) -> list[dict[str, Any]]:
        return self.wait(self.send(op, **fields))

    def first_line(self) -> dict[str, Any]:
        with self.changed:
            assert self.changed.wait_for(lambda: bool(self.lines), TIMEOUT)
            return self.lines[0]

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def run(host: Host, context: str, code: str, **fields: Any) -> list[dict[str, Any]]:
    events = host.call("execute", context=context, code=code, **fields)
    assert events[-1]["event"] == "done", events
    return events


def text(data: dict[str, str], mime: str = "text/plain") -> str:
    return base64.b64decode(data[mime]).decode()


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "bash"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "Bash", "language": "bash", "env": {"PS1": "$"}}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    return root


@pytest.fixture(scope="module")
def host(jupyter_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """One host with a python context ``py`` and a bash context ``sh``, shared by the tests."""
    kernel_host = Host(jupyter_path)
    cwd = str(tmp_path_factory.mktemp("cwd"))
    py = kernel_host.send("start", context="py", kernel="python3", cwd=cwd)
    sh = kernel_host.send("start", context="sh", kernel="bash", cwd=cwd)
    assert kernel_host.wait(py)[-1]["event"] == "ok"
    assert kernel_host.wait(sh)[-1]["event"] == "ok"
    yield kernel_host
    assert kernel_host.close() == 0


def test_ready_line_and_kernels_list_the_kernelspecs(host: Host) -> None:
    ready = host.first_line()
    assert ready["event"] == "ready"
    names = {k["name"]: k for k in ready["kernels"]}
    assert names["python3"]["language"] == "python"
    assert names["bash"] == {"name": "bash", "language": "bash", "displayName": "Bash"}
    (answer,) = host.call("kernels")
    assert answer["event"] == "ok" and answer["kernels"] == ready["kernels"]


def test_start_answers_with_the_language(host: Host) -> None:
    answer = host.call("start", context="extra", kernel="python3", cwd="/")[-1]
    assert answer == {"id": answer["id"], "event": "ok", "context": "extra", "kernel": "python3", "language": "python"}
    assert host.call("stop", context="extra")[-1]["event"] == "ok"
    assert host.call("stop", context="extra")[-1]["code"] == "context_not_found"


def test_start_failures(host: Host, tmp_path: Path) -> None:
    assert host.call("start", context="x", kernel="cobol", cwd="/")[-1]["code"] == "language_not_supported"
    assert host.call("start", context="py", kernel="python3", cwd="/")[-1]["code"] == "conflict"
    failed = host.call("start", context="x", kernel="python3", cwd=str(tmp_path / "missing"))[-1]
    assert failed["event"] == "fail" and failed["code"] == "kernel_start_failed"
    assert "x" not in {c["context"] for c in host.call("state")[-1]["contexts"]}


def test_state_persists_across_executions(host: Host) -> None:
    run(host, "py", "x = 1")
    events = run(host, "py", "x + 1")
    assert [e["event"] for e in events] == ["result", "done"]
    assert events[0]["data"]["text/plain"] == base64.b64encode(b"2").decode()
    done = events[-1]
    assert done["timedOut"] is False and done["kernelDied"] is False and isinstance(done["executionMs"], int)


def test_stdout_and_stderr_keep_their_order(host: Host) -> None:
    code = (
        "import sys\n"
        "print('one'); sys.stdout.flush()\n"
        "print('two', file=sys.stderr); sys.stderr.flush()\n"
        "print('three'); sys.stdout.flush()\n"
    )
    streams = [(e["stream"], e["text"]) for e in run(host, "py", code) if e["event"] == "stream"]
    assert streams == [("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "three\n")]


def test_matplotlib_figure_is_a_png_display(host: Host) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\n"
    displays = [e for e in run(host, "py", code) if e["event"] == "display"]
    assert len(displays) == 1
    assert base64.b64decode(displays[0]["data"]["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Figure" in text(displays[0]["data"])


def test_rich_values_are_base64(host: Host) -> None:
    code = "from IPython.display import display, HTML, JSON\ndisplay(HTML('<b>é</b>'))\ndisplay(JSON({'a': [1]}))\n"
    displays = [e["data"] for e in run(host, "py", code) if e["event"] == "display"]
    assert text(displays[0], "text/html") == "<b>é</b>"
    assert json.loads(text(displays[1], "application/json")) == {"a": [1]}


def test_an_exception_is_an_error_event(host: Host) -> None:
    events = run(host, "py", "def f():\n    return 1 / 0\nf()")
    (error,) = [e["error"] for e in events if e["event"] == "error"]
    assert error["name"] == "ZeroDivisionError" and error["value"] == "division by zero"
    assert any("f()" in line for line in error["traceback"])
    assert events[-1]["timedOut"] is False


def test_timeout_interrupts_and_the_context_keeps_its_state(host: Host) -> None:
    run(host, "py", "kept = 41")
    started = time.monotonic()
    events = run(host, "py", "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", timeout=1)
    assert time.monotonic() - started < 10
    assert [e["event"] for e in events] == ["stream", "error", "done"]
    assert events[1]["error"]["name"] == "KeyboardInterrupt"
    assert events[-1]["timedOut"] is True and events[-1]["kernelDied"] is False
    assert text(run(host, "py", "kept + 1")[0]["data"]) == "42"


def test_cancel_interrupts_a_running_cell_and_the_context_keeps_its_state(host: Host) -> None:
    run(host, "py", "kept = 41")
    busy = host.send("execute", context="py", code="import time\nprint('spinning', flush=True)\n"
                     "while True:\n    time.sleep(0.1)")
    queued = host.send("execute", context="py", code="never = 1")
    with host.changed:
        assert host.changed.wait_for(lambda: any(
            line.get("id") == busy and line["event"] == "stream" for line in host.lines), TIMEOUT)
    assert host.call("cancel", request=queued)[-1] == {"id": host.next_id, "event": "ok",
                                                       "found": True}
    started = time.monotonic()
    assert host.call("cancel", request=busy)[-1]["found"] is True
    events = host.wait(busy)
    assert time.monotonic() - started < 10
    assert [e["event"] for e in events] == ["stream", "error", "done"]
    assert events[1]["error"]["name"] == "KeyboardInterrupt"
    assert events[-1]["cancelled"] is True and events[-1]["timedOut"] is False
    assert host.wait(queued) == [{"id": queued, "event": "done", "executionMs": 0,
                                  "timedOut": False, "kernelDied": False, "cancelled": True}]
    assert text(run(host, "py", "kept + 1, 'never' in globals()")[0]["data"]) == "(42, False)"
    assert host.call("cancel", request=busy)[-1]["found"] is False  # it is over
    assert host.call("cancel", request="x")[-1]["code"] == "invalid_request"


def test_a_kernel_ignoring_the_interrupt_is_restarted(host: Host) -> None:
    assert host.call("start", context="stubborn", kernel="python3", cwd="/")[-1]["event"] == "ok"
    try:
        code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nlost = 1\ntime.sleep(60)"
        events = run(host, "stubborn", code, timeout=0.5, env={"QBOX_T": "x"})
        assert [e["event"] for e in events] == ["error", "done"]
        assert events[0]["error"]["name"] == "TimeoutError"
        assert events[-1]["timedOut"] is True and events[-1]["kernelDied"] is False
        assert text(run(host, "stubborn", "'lost' in globals()")[0]["data"]) == "False"
    finally:
        host.call("stop", context="stubborn")


def test_env_is_set_for_one_python_execution(host: Host) -> None:
    events = run(host, "py", "import os\nos.environ['QBOX_T'], os.environ['HOME'] != ''", env={"QBOX_T": "v 'q'"})
    assert text(events[0]["data"]) == "(\"v 'q'\", True)"
    assert text(run(host, "py", "os.environ.get('QBOX_T', 'unset')")[0]["data"]) == "'unset'"


def test_bash_context_with_env(host: Host) -> None:
    events = run(host, "sh", 'echo "$QBOX_T"; x=5', env={"QBOX_T": "a b'c$HOME\nline 2"})
    assert "".join(e["text"] for e in events if e["event"] == "stream") == "a b'c$HOME\nline 2\n"
    events = run(host, "sh", 'echo "${QBOX_T-unset} $x"')
    assert "".join(e["text"] for e in events if e["event"] == "stream") == "unset 5\n"


def test_bad_env_names_are_refused(host: Host) -> None:
    answer = host.call("execute", context="py", code="1", env={"A=B": "x"})[-1]
    assert answer["event"] == "fail" and answer["code"] == "invalid_request"


def test_executions_on_one_context_run_in_order(host: Host) -> None:
    first = host.send("execute", context="py", code="import time; time.sleep(0.5); print('first')")
    second = host.send("execute", context="py", code="print('second')")
    host.wait(second)
    done_first = next(i for i, line in enumerate(host.lines) if line.get("id") == first and line["event"] == "done")
    second_output = next(i for i, line in enumerate(host.lines) if line.get("id") == second)
    assert done_first < second_output


def test_two_contexts_run_in_parallel(host: Host) -> None:
    assert host.call("start", context="par", kernel="python3", cwd="/")[-1]["event"] == "ok"
    try:
        started = time.monotonic()
        ids = [host.send("execute", context=c, code="import time; time.sleep(2)") for c in ("py", "par")]
        for request_id in ids:
            assert host.wait(request_id)[-1]["event"] == "done"
        assert time.monotonic() - started < 3.5
    finally:
        host.call("stop", context="par")


def test_kernel_death_then_context_dead_then_restart(host: Host) -> None:
    assert host.call("start", context="dies", kernel="python3", cwd="/")[-1]["event"] == "ok"
    try:
        run(host, "dies", "lost = 1")
        events = run(host, "dies", "import os\nos._exit(3)")
        assert [e["event"] for e in events] == ["error", "done"]
        assert events[0]["error"]["name"] == "KernelDied" and "3" in events[0]["error"]["value"]
        assert events[-1]["kernelDied"] is True and events[-1]["timedOut"] is False
        states = {c["context"]: c["state"] for c in host.call("state")[-1]["contexts"]}
        assert states["dies"] == "dead" and states["py"] == "idle"
        assert host.call("execute", context="dies", code="1")[-1]["code"] == "context_dead"

        assert host.call("restart", context="dies")[-1]["event"] == "ok"
        assert text(run(host, "dies", "'lost' in globals(), 1 + 1")[0]["data"]) == "(False, 2)"
    finally:
        host.call("stop", context="dies")
    assert host.call("restart", context="dies")[-1]["code"] == "context_not_found"


def test_malformed_lines_get_a_fail_and_the_host_goes_on(host: Host) -> None:
    before = len(host.lines)
    host.write(b"not json\n[1, 2]\n{\"op\": \"state\"}\n")
    host.write(b'{"id": 7001, "op": "fly"}\n{"id": 7002, "op": "execute"}\n{"id": 7003, "op": "start", "context": 1}\n')
    assert host.wait(7003)[-1]["code"] == "invalid_request"
    assert host.wait(7001)[-1]["code"] == "invalid_request"
    assert host.wait(7002)[-1]["code"] == "invalid_request"
    anonymous = [line for line in host.lines[before:] if line.get("id") is None]
    assert len(anonymous) == 3 and all(line["event"] == "fail" for line in anonymous)
    assert host.call("state")[-1]["event"] == "ok"


def test_stdout_carries_only_protocol_lines(host: Host) -> None:
    run(host, "py", "import os\nos.write(1, b'raw fd output\\n')\nprint('via print')")
    run(host, "sh", "echo from bash >&2")
    for raw in host.raw:
        assert raw.endswith(b"\n") and isinstance(json.loads(raw), dict)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_stdin_eof_shuts_every_kernel_down(jupyter_path: Path) -> None:
    own = Host(jupyter_path)
    assert own.call("start", context="a", kernel="python3", cwd="/")[-1]["event"] == "ok"
    assert own.call("start", context="b", kernel="bash", cwd="/")[-1]["event"] == "ok"
    python_pid = int(text(run(own, "a", "import os; os.getpid()")[0]["data"]))
    bash_output = run(own, "b", "echo $$ $PPID")
    bash_pid, bash_kernel_pid = (int(p) for p in bash_output[0]["text"].split())
    pids = (python_pid, bash_pid, bash_kernel_pid)
    assert all(_alive(pid) for pid in pids)

    assert own.close() == 0
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
