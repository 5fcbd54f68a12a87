"""A fake image store for agent tests: images are plain directories, imports are instant."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from qbox.core.errors import NotFoundError, ValidationError


@dataclass(frozen=True)
class FakeImageInfo:
    digest: str
    size_bytes: int


@dataclass(frozen=True)
class FakeImageConfig:
    env: tuple[str, ...] = ()
    working_dir: str = ""


class FakeImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.imported: list[tuple[str, str]] = []
        self.env: tuple[str, ...] = ()

    def add(self, name: str) -> str:
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        (self.root / digest.split(":")[1] / "rootfs").mkdir(parents=True, exist_ok=True)
        return digest

    async def import_image(self, ref: str, name: str, on_progress: object = None) -> FakeImageInfo:
        if not ref.startswith(("oci:", "docker://", "oci-archive:", "docker-archive:")):
            raise ValidationError(f"bad ref {ref}")
        self.imported.append((ref, name))
        return FakeImageInfo(self.add(ref), 1234)

    def has(self, digest: str) -> bool:
        return (self.root / digest.partition(":")[2] / "rootfs").is_dir()

    def digests(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"sha256:{d.name}" for d in self.root.iterdir() if (d / "rootfs").is_dir())

    def info(self, digest: str) -> FakeImageInfo:
        if not self.has(digest):
            raise NotFoundError(f"image {digest} is not in this host's store")
        return FakeImageInfo(digest, 1234)

    def rootfs_path(self, digest: str) -> Path:
        if not self.has(digest):
            raise NotFoundError(f"image {digest} is not in this host's store")
        return self.root / digest.partition(":")[2] / "rootfs"

    def lower_dirs(self, digest: str) -> list[Path]:
        return [self.rootfs_path(digest)]

    def kernels(self, digest: str) -> list[dict[str, str]] | None:
        return None  # a base image: its kernelspecs are read from its rootfs

    def config(self, digest: str) -> FakeImageConfig:
        return FakeImageConfig(self.env)
