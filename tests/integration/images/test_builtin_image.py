"""The built-in base image and the image store with the real mmdebstrap, umoci and skopeo.

The base image is taken from the machine-wide cache (``$QBOX_CACHE_DIR`` or
/var/cache/qbox) and built into it first if it is missing (~30 s), so the
suite does not rebuild it on every run. Each test module imports it into a
fresh store in a temp dir, removed afterwards whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qbox.agent.images import ImageInfo, ImageStore, base_image_ref, ensure_base_image, machine_cache_dir
from qbox.agent.images.base_image import base_image_dir
from qbox.agent.images.recipe import PYTHON_RECIPE, SANDBOX_PATH
from qbox.core.errors import ValidationError

_TOOLS = ("mmdebstrap", "umoci", "skopeo", "chroot")

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _root_and_tools() -> None:
    # `make setup` installs the tools and CI runs as root: missing either is a failure, not a skip.
    assert os.geteuid() == 0, "building and unpacking images needs root"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    assert not missing, f"missing tools (run make setup): {missing}"


@dataclass(frozen=True)
class Imported:
    store: ImageStore
    info: ImageInfo
    seconds: float


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    cache = machine_cache_dir()
    asyncio.run(ensure_base_image(cache))
    return cache


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qbox-images-it-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def imported(cache_dir: Path, scratch: Path) -> Imported:
    store = ImageStore(scratch / "store")
    started = time.monotonic()
    info = asyncio.run(store.import_image(base_image_ref(cache_dir), "python"))
    return Imported(store, info, time.monotonic() - started)


def _cache_manifest_digest(cache_dir: Path) -> str:
    index = json.loads((base_image_dir(cache_dir) / "oci" / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    return str(entry["digest"])


def test_base_image_is_in_the_machine_cache(cache_dir: Path) -> None:
    entry = base_image_dir(cache_dir)
    assert entry.name == PYTHON_RECIPE.key()
    meta = json.loads((entry / "recipe.json").read_text())
    assert meta["key"] == PYTHON_RECIPE.key()
    # The cache keeps the OCI image only, never a loose rootfs.
    assert sorted(p.name for p in entry.iterdir()) == ["oci", "recipe.json"]


def test_import_keeps_the_manifest_digest(cache_dir: Path, imported: Imported) -> None:
    assert imported.info.digest == _cache_manifest_digest(cache_dir)
    assert imported.info.size_bytes > 20_000_000
    assert imported.store.has(imported.info.digest)
    assert imported.store.info(imported.info.digest) == imported.info


def test_rootfs_is_a_python_sandbox_base(imported: Imported) -> None:
    rootfs = imported.store.rootfs_path(imported.info.digest)

    for binary in ("usr/bin/python3", "usr/bin/bash", "usr/bin/ps", "usr/bin/less", "usr/bin/curl"):
        assert (rootfs / binary).exists(), binary
    assert (rootfs / "usr/lib/python3/dist-packages/pip").is_dir()
    assert (rootfs / "usr/lib/python3.11/venv").is_dir()
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").is_file()

    home = (rootfs / "home/user").stat()
    assert (home.st_uid, home.st_gid) == (1000, 1000)
    assert "user:x:1000:1000::/home/user:/bin/bash" in (rootfs / "etc/passwd").read_text().splitlines()
    assert "user:x:1000:" in (rootfs / "etc/group").read_text().splitlines()
    assert (rootfs / "etc/hostname").read_text() == "localhost\n"
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert sorted(p.name for p in (rootfs / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]
    assert not any((rootfs / "var/cache/apt/archives").glob("*.deb"))


def test_python_runs_there_as_the_sandbox_user(imported: Imported) -> None:
    rootfs = imported.store.rootfs_path(imported.info.digest)
    # -I -B: read only; nothing may write into a shared lower dir.
    script = "import os, ssl, sqlite3, venv; print(os.getuid(), ssl.OPENSSL_VERSION.split()[0])"
    out = subprocess.run(
        ["chroot", "--userspec=1000:1000", str(rootfs), "/usr/bin/python3", "-I", "-B", "-c", script],
        env={"PATH": SANDBOX_PATH},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.split() == ["1000", "OpenSSL"]


def test_kernels_and_the_data_stack_are_there(imported: Imported) -> None:
    rootfs = imported.store.rootfs_path(imported.info.digest)
    # -I -B: read only; nothing may write into a shared lower dir.
    # A chroot has no /proc or /dev, which IPython needs at import (even
    # jupyter_client's kernelspec lookup imports it); starting kernels is the
    # code interpreter's integration test.
    script = (
        "import importlib.metadata, importlib.util, numpy, pandas, matplotlib.pyplot\n"
        "assert all(importlib.util.find_spec(m) for m in ('bash_kernel', 'ipykernel', 'pexpect', 'filetype'))\n"
        "print(importlib.metadata.version('jupyter_client'), importlib.metadata.version('bash_kernel'))\n"
    )
    out = subprocess.run(
        ["chroot", "--userspec=1000:1000", str(rootfs), "/usr/bin/python3", "-I", "-B", "-c", script],
        env={"PATH": SANDBOX_PATH, "HOME": "/home/user", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    jupyter_client_version, bash_kernel_version = out.stdout.split()
    assert jupyter_client_version.startswith("7.4.") and bash_kernel_version == "0.10.0"
    assert json.loads((rootfs / "usr/share/jupyter/kernels/python3/kernel.json").read_text())["language"] == "python"
    bash = json.loads((rootfs / "usr/local/share/jupyter/kernels/bash/kernel.json").read_text())
    assert bash["argv"] == ["python3", "-m", "bash_kernel", "-f", "{connection_file}"]
    assert (bash["display_name"], bash["language"]) == ("Bash", "bash")
    # Built at image build time, as the sandbox user: the first plot in a sandbox is not slowed by it.
    font_cache = next((rootfs / "home/user/.cache/matplotlib").glob("fontlist-*.json"))
    assert (font_cache.stat().st_uid, font_cache.stat().st_gid) == (1000, 1000)
    # Precompiled: importing the kernel writes no .pyc into the (read-only, shared) image.
    assert list((rootfs / "usr/local/lib/python3.11/dist-packages/bash_kernel/__pycache__").glob("kernel.*.pyc"))


def test_image_config(imported: Imported) -> None:
    config = imported.store.config(imported.info.digest)

    assert config.env == (f"PATH={SANDBOX_PATH}", "MPLBACKEND=Agg")
    assert config.working_dir == "/home/user"
    assert config.user == ""  # qbox picks the user per exec


def test_second_import_is_a_fast_no_op(cache_dir: Path, imported: Imported) -> None:
    bundle = imported.store.rootfs_path(imported.info.digest).parent
    before = bundle.stat().st_ino

    started = time.monotonic()
    again = asyncio.run(imported.store.import_image(base_image_ref(cache_dir), "python"))
    seconds = time.monotonic() - started

    assert again == imported.info
    assert seconds < 2, seconds
    assert bundle.stat().st_ino == before
    assert list((imported.store.root / "tmp").iterdir()) == []


def test_an_oci_archive_of_the_same_image_shares_its_rootfs(cache_dir: Path, imported: Imported, scratch: Path) -> None:
    archive = scratch / "python.tar"
    subprocess.run(
        ["skopeo", "copy", "--quiet", base_image_ref(cache_dir), f"oci-archive:{archive}"],
        check=True,
        timeout=120,
    )

    info = asyncio.run(imported.store.import_image(f"oci-archive:{archive}", "python-from-archive"))

    assert info == imported.info
    assert len(list((imported.store.root / "rootfs").iterdir())) == 1


def test_concurrent_imports_into_a_fresh_store_unpack_once(cache_dir: Path, scratch: Path) -> None:
    store = ImageStore(scratch / "concurrent")
    ref = base_image_ref(cache_dir)

    async def both() -> list[ImageInfo]:
        return list(await asyncio.gather(store.import_image(ref, "a"), store.import_image(ref, "b")))

    first, second = asyncio.run(both())

    assert first == second
    assert len(list((store.root / "rootfs").iterdir())) == 1


def test_unknown_tag_is_a_validation_error(cache_dir: Path, scratch: Path) -> None:
    store = ImageStore(scratch / "errors")
    ref = f"oci:{base_image_dir(cache_dir) / 'oci'}:no-such-tag"

    with pytest.raises(ValidationError, match="no-such-tag"):
        asyncio.run(store.import_image(ref, "python"))
