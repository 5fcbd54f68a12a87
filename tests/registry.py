"""A real OCI registry (CNCF distribution, Debian's ``docker-registry``) for the tests.

It listens over plain http on 127.0.0.1 only, on a free port, and keeps its
blobs in a temp dir; the process and the dir are removed whatever happens.
qbox and skopeo talk to a loopback registry without TLS (the ref rules), so
no certificate is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.oci_images import busybox_layout
from tests.qbox_process import free_port

REGISTRY_BINARY = "/usr/bin/docker-registry"
# Where registry_with_busybox() keeps the test image.
BUSYBOX_REPO = "test/busybox:1"

_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {host}:{port}
"""
_AUTH = """\
auth:
  htpasswd:
    realm: qbox-test
    path: {path}
"""


@contextmanager
def running_registry(timeout: float = 30, login: tuple[str, str] | None = None,
                     host: str = "127.0.0.1") -> Iterator[str]:
    """A registry for the duration: its address, ``"HOST:PORT"``.

    With ``login`` (user, password) it asks for that login (htpasswd, bcrypt). ``host`` is
    the address it listens on (the multi-host tests' agents reach it on their bridge).
    """
    base = Path(tempfile.mkdtemp(prefix="qbox-registry-"))
    port = free_port()
    config = base / "config.yml"
    text = _CONFIG.format(root=base / "storage", host=host, port=port)
    if login is not None:
        (base / "htpasswd").write_text(f"{login[0]}:{_bcrypt(login[1])}\n")
        text += _AUTH.format(path=base / "htpasswd")
    config.write_text(text)
    log_path = base / "registry.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(process, f"http://{host}:{port}/v2/", log_path, timeout)
        yield f"{host}:{port}"
    finally:
        process.kill()
        process.wait(10)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def registry_with_busybox(host: str = "127.0.0.1") -> Iterator[str]:
    """A registry on ``host`` holding tests/oci_images.py's busybox as BUSYBOX_REPO; yields
    its address."""
    scratch = Path(tempfile.mkdtemp(prefix="qbox-registry-images-"))
    try:
        with running_registry(host=host) as address:
            push(busybox_layout(scratch / "busybox"), f"{address}/{BUSYBOX_REPO}")
            yield address
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {process.returncode}:\n"
                               f"{log_path.read_text(errors='replace')[-4000:]}")
        try:
            # 401 until logged in: any answer of the registry means it is up.
            if httpx.get(url, timeout=1).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not answer {url} in {timeout} s:\n"
                               f"{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.05)


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt for htpasswd, without a new dependency
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def push(src_ref: str, dest: str, timeout: float = 120) -> None:
    """Copy ``src_ref`` (any skopeo ref, e.g. ``oci:/dir:tag``) to ``dest`` (``REG/repo:tag``)."""
    done = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", src_ref,
                           f"docker://{dest}"], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy {src_ref} docker://{dest} failed: {done.stderr[-2000:]}")


def inspect(ref: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``skopeo inspect`` of a ``docker://`` ref in a test registry (its exit code is the answer)."""
    return subprocess.run(["skopeo", "inspect", "--tls-verify=false", ref], capture_output=True,
                          text=True, timeout=timeout)
