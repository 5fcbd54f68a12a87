"""The agent's content-addressed image store: one OCI layout plus unpacked rootfs trees.

``ImageStore`` is what every template's image goes through on an agent. It
reads like its tree on disk (``store_tree``, where the layout is drawn) and
writes through one lock: imports and pushes (``transfer``), a build's layer
(``commit``) and collection (``gc``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qbox.agent.images.commit import commit_layer
from qbox.agent.images.gc import collect_garbage
from qbox.agent.images.refs import RegistryCredentials
from qbox.agent.images.runner import CommandRunner, SubprocessRunner
from qbox.agent.images.store_tree import ImageInfo, StoreTree
from qbox.agent.images.transfer import import_image, push_image

ProgressCallback = Callable[[str], None]


class ImageStore(StoreTree):
    def __init__(
        self,
        root: Path,
        *,
        runner: CommandRunner | None = None,
        insecure_registries: Sequence[str] = (),
    ) -> None:
        super().__init__(root)
        self._runner: CommandRunner = runner or SubprocessRunner()
        # Registries reached without TLS verification besides loopback ones.
        self._insecure = frozenset(insecure_registries)

    async def import_image(
        self,
        ref: str,
        name: str,
        on_progress: ProgressCallback | None = None,
        *,
        credentials: RegistryCredentials | None = None,
    ) -> ImageInfo:
        """Copy ``ref`` into the store as ``name`` and unpack it once. Idempotent.

        The copy always runs (skopeo downloads no blob the store already
        has, and for a registry ref it picks up a moved tag); the unpack is
        skipped when that manifest is already unpacked.
        """
        return await import_image(
            self, self._runner, self._insecure, ref, name, on_progress or _ignore, credentials
        )

    async def commit(
        self,
        name: str,
        base_digest: str,
        layer_dir: Path,
        *,
        env: dict[str, str],
        working_dir: str | None,
        user: str | None,
        kernels: list[dict[str, Any]],
        on_progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        """Store ``layer_dir`` (overlayfs format, image ids) as a new layer on ``base_digest``.

        The layer is added to the layout (``umoci raw add-layer``), the config
        gets ``env``/``working_dir``/``user``, the result is tagged ``name``
        and ``layer_dir`` moves to ``layers/`` to be mounted as is.
        """
        return await commit_layer(
            self, self._runner, name, base_digest, layer_dir,
            env=env, working_dir=working_dir, user=user, kernels=kernels, progress=on_progress or _ignore,
        )  # fmt: skip

    async def push(self, digest: str, dest: str, on_progress: ProgressCallback | None = None) -> str:
        """Copy the image to the registry reference ``dest``; return ``docker://<repo>@<digest>``."""
        return await push_image(self, self._runner, self._insecure, digest, dest, on_progress or _ignore)

    async def gc(self, keep: set[str], in_use: set[str], *,
                 grace_seconds: float = 0.0) -> tuple[list[str], int]:
        """Remove every image not in ``keep`` or ``in_use`` (and not a base of one that is),
        nor imported or committed in the last ``grace_seconds``.

        The grace covers a race: the caller computes ``keep`` from its records,
        and a build may import or commit an image after that and before this
        runs. Returns the removed manifest digests and the bytes freed
        (unpacked trees, layer dirs and blobs).
        """
        return await collect_garbage(self, self._runner, keep, in_use, grace_seconds)


def _ignore(_: str) -> None:
    pass
