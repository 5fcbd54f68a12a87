"""The image store under the control plane's agent: every ref "pulls" at once, builds commit.

Each image is a directory tree that the fake runtime's sandboxes start from: a
user database whose login shell is ``fake_login_shell.py`` (so shells behave
the same everywhere) and, unless a test turns it off, a Python kernelspec (so
templates offer the code interpreter, served by the agent tests' fake kernel
host). Knobs: ``hold`` (cleared, a pull waits after its first log line),
``import_error`` and ``kernels``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from qbox.core.errors import QboxError
from tests.unit.agent.fakes import FakeImageConfig, FakeImageInfo, FakeImageStore

LOGIN_SHELL = Path(__file__).with_name("fake_login_shell.py")
# Where the images hold it (the fake runtime runs a sandbox's own programs from the sandbox).
SHELL_PATH = "/usr/libexec/qbox-test/login-shell"
KERNELS = [{"name": "python3", "language": "python", "displayName": "Python 3"}]
# A built image's size: what the control plane reports for a template.
BUILT_SIZE = 4096


class HostImageStore(FakeImageStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.hold = threading.Event()
        self.hold.set()
        self.cancelled_pulls = 0
        self.import_error: QboxError | None = None
        self.kernels_in_images = True
        self._saved_kernels: dict[str, list[dict[str, str]]] = {}
        self._env: dict[str, list[str]] = {}

    def add(self, name: str) -> str:
        digest = super().add(name)
        rootfs = self.rootfs_path(digest)
        (rootfs / "etc").mkdir(exist_ok=True)
        (rootfs / "etc/passwd").write_text(f"root:x:0:0::/root:{SHELL_PATH}\n"
                                           f"user:x:1000:1000::/home/user:{SHELL_PATH}\n")
        (rootfs / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
        shell = rootfs / SHELL_PATH.lstrip("/")
        shell.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(LOGIN_SHELL, shell)
        shell.chmod(0o755)
        if self.kernels_in_images:
            spec = rootfs / "usr/share/jupyter/kernels/python3"
            spec.mkdir(parents=True, exist_ok=True)
            (spec / "kernel.json").write_text(json.dumps(
                {"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                 "display_name": "Python 3", "language": "python"}))
        return digest

    async def import_image(self, ref: str, name: str, on_progress: Any = None, *,
                           credentials: Any = None) -> FakeImageInfo:
        if on_progress is not None:
            on_progress(f"pulling {ref}")
        try:
            while not self.hold.is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled_pulls += 1
            raise
        if self.import_error is not None:
            raise self.import_error
        self.imported.append((ref, name))
        return FakeImageInfo(self.add(ref), 1234)

    def kernels(self, digest: str) -> list[dict[str, str]] | None:
        return self._saved_kernels.get(digest)

    def config(self, digest: str) -> FakeImageConfig:
        return FakeImageConfig((*self.env, *self._env.get(digest, ())))

    def work_dir(self) -> Path:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

    async def commit(self, name: str, base_digest: str, layer_dir: Path, *,
                     env: dict[str, str], working_dir: str | None, user: str | None,
                     kernels: list[dict[str, str]], on_progress: Any = None) -> FakeImageInfo:
        """The base with the layer on top; the same build gives the same digest."""
        content = hashlib.sha256(json.dumps([base_digest, env, working_dir, user]).encode())
        for path in sorted(layer_dir.rglob("*")):
            content.update(str(path.relative_to(layer_dir)).encode())
            if path.is_file():
                content.update(path.read_bytes())
        digest = "sha256:" + content.hexdigest()
        rootfs = self.root / digest.partition(":")[2] / "rootfs"
        if not rootfs.is_dir():
            await asyncio.to_thread(shutil.copytree, self.rootfs_path(base_digest), rootfs,
                                    symlinks=True)
            await asyncio.to_thread(shutil.copytree, layer_dir, rootfs, symlinks=True,
                                    dirs_exist_ok=True)
        self._saved_kernels[digest] = kernels
        self._env[digest] = [f"{k}={v}" for k, v in env.items()]
        return FakeImageInfo(digest, BUILT_SIZE)

    async def push(self, digest: str, dest: str, on_progress: Any = None) -> str:
        return f"docker://{dest.rsplit(':', 1)[0]}@{digest}"

    async def gc(self, keep: set[str], in_use: set[str], *,
                 grace_seconds: float = 0.0) -> tuple[list[str], int]:
        return [], 0
