"""``sandbox.envs`` (async here; sync against the real app in tests/unit/server/test_envs_sdk.py):
request shapes and parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbox import AsyncSandbox, DotenvResult, EnvVar, QboxError
from qbox.sdk._env_ops import dotenv_text
from tests.unit.sdk.fakes import FakeServer, reply, sandbox

SB = "sb_abc12345"
ENVS = f"/v1/sandboxes/{SB}/envs"


async def connected(server: FakeServer) -> AsyncSandbox:
    server.on("GET", f"/v1/sandboxes/{SB}", reply(200, sandbox(SB)))
    return await AsyncSandbox.connect(SB, config=server.config())


async def test_async_envs_calls(server: FakeServer) -> None:
    listed = {"envs": [{"key": "A", "value": "1", "source": "user"},
                       {"key": "TOKEN", "value": "********", "source": "user", "secret": True},
                       {"key": "QBOX_SANDBOX_ID", "source": "system"}]}
    server.on("GET", ENVS, reply(200, listed))
    server.on("PATCH", ENVS, reply(200, listed))
    server.on("PUT", ENVS, reply(200, listed))
    server.on("DELETE", ENVS, reply(200, listed))
    sb = await connected(server)
    envs = await sb.envs.list(mask=True)
    assert server.last("GET", ENVS).params == {"mask": "true"}
    assert envs[0] == EnvVar("A", "1", "user", False)
    assert envs[1].secret and envs[2] == EnvVar("QBOX_SANDBOX_ID", "", "system", False)
    assert await sb.envs.get_all() == {"A": "1", "TOKEN": "********", "QBOX_SANDBOX_ID": ""}
    assert server.last("GET", ENVS).params == {}
    assert await sb.envs.get("A") == "1" and await sb.envs.get("NOPE", "d") == "d"
    await sb.envs.set({"A": "2"}, B="3")
    assert server.last("PATCH", ENVS).body == {"envs": {"A": "2", "B": "3"}}
    await sb.envs.set({"K": "v"}, secret=["K"])
    assert server.last("PATCH", ENVS).body == {"envs": {"K": "v"}, "secret": ["K"]}
    await sb.envs.set_all({"X": "y"}, secret=True)
    assert server.last("PUT", ENVS).body == {"envs": {"X": "y"}, "secret": True}
    await sb.envs.clear()
    assert server.last("PUT", ENVS).body == {"envs": {}}
    await sb.envs.delete("A", "B")
    assert server.last("DELETE", ENVS).body == {"keys": ["A", "B"]}
    calls = len(server.seen)
    await sb.envs.set()  # nothing to send
    await sb.envs.delete()
    assert len(server.seen) == calls
    with pytest.raises(TypeError):
        await sb.envs.set({"A": "1"}, secret="A")


async def test_a_malformed_listing_is_a_bad_response(server: FakeServer) -> None:
    server.on("GET", ENVS, reply(200, {"envs": [{"value": "no key"}]}))
    sb = await connected(server)
    with pytest.raises(QboxError) as caught:
        await sb.envs.list()
    assert caught.value.code == "bad_response"


def test_dotenv_results_and_sources(tmp_path: Path) -> None:
    result = DotenvResult.from_wire({"applied": ["A"], "skipped": 2,
                                     "rejected": [{"line": 3, "reason": "bad"},
                                                  {"line": 4, "reason": "reserved", "key": "QBOX_X"}]})
    assert result.applied == ["A"] and result.skipped == 2
    assert [(r.line, r.key) for r in result.rejected] == [(3, None), (4, "QBOX_X")]
    assert DotenvResult.from_wire(None) == DotenvResult()
    env_file = tmp_path / "prod.env"
    env_file.write_text("A=1\n")
    assert dotenv_text(str(env_file)) == "A=1\n" == dotenv_text(env_file)
    assert dotenv_text("A=1") == "A=1"  # has '=': the text itself
    with pytest.raises(FileNotFoundError):
        dotenv_text(str(tmp_path / "missing.env"))
