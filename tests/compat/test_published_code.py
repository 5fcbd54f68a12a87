"""The published client's code interpreter calls and `qbox doctor` against our server."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.compat.conftest import run_published_script
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.compat

SCRIPT = textwrap.dedent('''
    import json
    import qbox
    from qbox import Sandbox
    from qbox.code.execution import ExecutionDone, ExecutionError, ResultDisplay, StreamOutput

    out = {}
    sb = Sandbox.create("tpl_python", timeout=180)
    try:
        out["services"] = [s.type for s in sb.get_info().services]
        ex = sb.run_code("x = 20\\nprint('side')\\nx * 2 + 2")
        out["unary"] = [ex.text, ex.stdout, ex.error is None, bool(ex.context_id)]
        out["state"] = sb.run_code("x + 1").text
        try:
            sb.run_code("1/0")
            out["raised"] = None
        except qbox.QboxError as exc:
            out["raised"] = type(exc).__name__
        ex = sb.run_code("1/0", raise_on_execution_error=False)
        out["error"] = [ex.error.error_name, len(ex.error.traceback) > 0]
        chunks = []
        ex = sb.run_code("import sys\\nprint('a')\\nprint('b', file=sys.stderr)\\n7",
                         on_stdout=chunks.append, on_stderr=chunks.append)
        out["callbacks"] = [chunks, ex.text]
        kinds = [type(e).__name__ for e in sb.run_code_stream("print(1)\\n2")]
        out["stream"] = kinds
        png = sb.run_code("import matplotlib.pyplot as plt\\nplt.plot([1, 2, 3])\\nplt.show()")
        out["png"] = [bool(r.png) and r.png[:8] == b"\\x89PNG\\r\\n\\x1a\\n" for r in png.results]
        ctx = sb.code_contexts.create("bash")
        out["bash"] = sb.run_code("echo $((6*7))", context=ctx).stdout
        langs = sorted(l.language for l in sb.code_contexts.list_supported_languages())
        out["languages"] = langs
        ctx2 = sb.code_contexts.create("python")
        sb.run_code("y = 1", context=ctx2)
        sb.code_contexts.restart(ctx2)
        ex = sb.run_code("y", context=ctx2, raise_on_execution_error=False)
        out["restarted"] = ex.error.error_name if ex.error else None
        out["contexts"] = len(sb.code_contexts.list()) >= 3
        sb.code_contexts.remove(ctx2)
        ex = sb.run_code("import time\\ntime.sleep(30)", timeout=2, raise_on_execution_error=False)
        out["timeout"] = [ex.summary.timed_out if ex.summary else None,
                          ex.error.error_name if ex.error else None]
        out["after_timeout"] = sb.run_code("x").text
    finally:
        sb.kill()
    print(json.dumps(out))
''')


def test_published_client_run_code(published_python: Path, qbox_for_compat: QboxUp) -> None:
    out = run_published_script(published_python, qbox_for_compat, SCRIPT)
    assert out["services"] == ["code-interpreter"]
    assert out["unary"] == ["42", "side\n", True, True]
    assert out["state"] == "21"
    assert out["raised"] == "ExecutionRaisedError"
    assert out["error"] == ["ZeroDivisionError", True]
    assert out["callbacks"] == [["a\n", "b\n"], "7"]
    assert out["stream"][-1] == "ExecutionDone"
    assert "StreamOutput" in out["stream"] and "ResultDisplay" in out["stream"]
    assert out["png"] == [True]
    assert out["bash"] == "42\n"
    assert out["languages"] == ["bash", "python"]
    assert out["restarted"] == "NameError"
    assert out["contexts"] is True
    assert out["timeout"] == [True, "KeyboardInterrupt"]
    assert out["after_timeout"] == "20"
