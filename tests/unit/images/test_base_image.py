"""Building the base image into the machine's cache (fake build tools): once, atomically, as root."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from qbox.agent.images import (
    PYTHON_RECIPE,
    ImageStore,
    base_image_ref,
    ensure_base_image,
    ensure_builtin_python,
    machine_cache_dir,
)
from qbox.agent.images.base_image import base_image_dir
from qbox.core.errors import InternalError

from .fakes import Reply, build_runner, digest_for


BUILD_STEPS = [
    "mmdebstrap",
    "chroot groupadd",
    "chroot useradd",
    "pip download",
    "chroot python3",
    "chroot env",
    "umoci init",
    "umoci new",
    "umoci insert",
    "umoci config",
    "umoci gc",
]


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A root agent on a host with mmdebstrap installed (neither needed for real)."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}" if tool == "mmdebstrap" else None)


@pytest.fixture
def apt_dir(tmp_path: Path) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("deb http://mirror.corp.example/debian bookworm main\n")
    return apt


async def test_builds_once_and_returns_an_oci_ref(tmp_path: Path, apt_dir: Path) -> None:
    runner = build_runner()
    lines: list[str] = []

    ref = await ensure_base_image(tmp_path / "cache", lines.append, runner=runner, apt_dir=apt_dir)

    entry = tmp_path / "cache" / "base-images" / PYTHON_RECIPE.key()
    assert ref == f"oci:{entry}/oci:latest" == base_image_ref(tmp_path / "cache")
    assert runner.tools() == BUILD_STEPS
    assert sorted(p.name for p in entry.iterdir()) == ["oci", "recipe.json"]
    meta = json.loads((entry / "recipe.json").read_text())
    assert meta["key"] == PYTHON_RECIPE.key()
    assert meta["sources"] == ["deb http://mirror.corp.example/debian bookworm main"]
    assert [p.name for p in entry.parent.iterdir() if p.name.startswith(".build-")] == []
    assert "mmdebstrap: running apt-get update..." in lines
    assert "packing OCI image…" in lines


async def test_build_uses_the_host_mirror(tmp_path: Path, apt_dir: Path) -> None:
    runner = build_runner()

    await ensure_base_image(tmp_path / "cache", runner=runner, apt_dir=apt_dir)

    assert runner.calls[0][-1] == "deb http://mirror.corp.example/debian bookworm main"


async def test_sandbox_user_and_image_config(tmp_path: Path, apt_dir: Path) -> None:
    runner = build_runner()

    await ensure_base_image(tmp_path / "cache", runner=runner, apt_dir=apt_dir)

    useradd = next(c for c in runner.calls if c[:1] == ["chroot"] and c[2] == "useradd")
    assert useradd[-1] == "user"
    assert useradd[useradd.index("--uid") + 1] == "1000"
    assert useradd[useradd.index("--home-dir") + 1] == "/home/user"
    assert useradd[useradd.index("--shell") + 1] == "/bin/bash"
    config = next(c for c in runner.calls if c[:2] == ["umoci", "config"])
    assert "--config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in config
    assert "--config.workingdir=/home/user" in config
    assert not any(arg.startswith("--config.user") for arg in config)


async def test_existing_image_is_never_rebuilt(tmp_path: Path, apt_dir: Path) -> None:
    await ensure_base_image(tmp_path / "cache", runner=build_runner(), apt_dir=apt_dir)
    runner = build_runner()

    ref = await ensure_base_image(tmp_path / "cache", runner=runner, apt_dir=apt_dir)

    assert ref == base_image_ref(tmp_path / "cache")
    assert runner.calls == []


async def test_concurrent_callers_build_once(tmp_path: Path, apt_dir: Path) -> None:
    runner = build_runner()
    runner.delay = 0.02
    progress: list[list[str]] = [[], []]

    refs = await asyncio.gather(
        *(ensure_base_image(tmp_path / "cache", progress[i].append, runner=runner, apt_dir=apt_dir) for i in range(2))
    )

    assert refs[0] == refs[1]
    assert runner.tools() == BUILD_STEPS
    waited = [lines for lines in progress if any("waiting for another" in x for x in lines)]
    assert len(waited) == 1


async def test_failed_build_leaves_no_entry_and_no_build_dir(tmp_path: Path, apt_dir: Path) -> None:
    runner = build_runner()
    runner.handlers["mmdebstrap"] = lambda argv: Reply(1, ("E: Unable to locate package python3",))

    with pytest.raises(InternalError, match="Unable to locate package"):
        await ensure_base_image(tmp_path / "cache", runner=runner, apt_dir=apt_dir)

    assert list((tmp_path / "cache" / "base-images").glob("python-*/")) == []


async def test_failed_pack_is_internal(tmp_path: Path, apt_dir: Path) -> None:
    runner = build_runner()
    fake_umoci = runner.handlers["umoci"]
    runner.handlers["umoci"] = lambda argv: (
        Reply(1, ("insert: no space left",)) if argv[1] == "insert" else fake_umoci(argv)
    )

    with pytest.raises(InternalError, match="umoci insert failed"):
        await ensure_base_image(tmp_path / "cache", runner=runner, apt_dir=apt_dir)
    assert not base_image_dir(tmp_path / "cache").exists()


async def test_interrupted_build_is_cleared(tmp_path: Path, apt_dir: Path) -> None:
    stale = tmp_path / "cache" / "base-images" / f".build-{PYTHON_RECIPE.key()}-crashed"
    (stale / "rootfs" / "etc").mkdir(parents=True)
    lines: list[str] = []

    await ensure_base_image(tmp_path / "cache", lines.append, runner=build_runner(), apt_dir=apt_dir)

    assert not stale.exists()
    assert any("interrupted build" in line for line in lines)


async def test_building_needs_root_but_reading_does_not(
    tmp_path: Path, apt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    runner = build_runner()
    with pytest.raises(InternalError, match="needs root"):
        await ensure_base_image(tmp_path / "cache", runner=runner, apt_dir=apt_dir)
    assert runner.calls == []

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    await ensure_base_image(tmp_path / "cache", runner=build_runner(), apt_dir=apt_dir)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert await ensure_base_image(tmp_path / "cache", runner=runner) == base_image_ref(tmp_path / "cache")


async def test_ensure_builtin_python_imports_the_base_as_python(
    tmp_path: Path, apt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = build_runner()
    cache = tmp_path / "cache"
    await ensure_base_image(cache, runner=runner, apt_dir=apt_dir)
    store = ImageStore(tmp_path / "store", runner=runner)
    lines: list[str] = []

    info = await ensure_builtin_python(store, cache, lines.append)

    assert info.digest == digest_for(store.layout_dir, "python")
    assert store.has(info.digest)
    assert any(line.startswith("pulling oci:") for line in lines)


def test_machine_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QBOX_CACHE_DIR", str(tmp_path / "c"))
    assert machine_cache_dir() == tmp_path / "c"

    monkeypatch.delenv("QBOX_CACHE_DIR")
    assert machine_cache_dir() == Path("/var/cache/qbox")

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert machine_cache_dir() == tmp_path / "xdg" / "qbox"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert machine_cache_dir() == tmp_path / "home" / ".cache" / "qbox"
