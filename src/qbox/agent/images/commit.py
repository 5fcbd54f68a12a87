"""Committing a build's layer: a directory in overlayfs format becomes a new image on a base.

The layer is added to the OCI layout (``umoci raw add-layer``) for pushes and
``info``, and its directory moves to ``layers/`` to be mounted as it is; a
record in ``images/`` says which layers, top first, stack on which base.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qbox.agent.images.layers import remove_device_nodes, write_layer_tar
from qbox.agent.images.layout import write_json
from qbox.agent.images.lock import file_lock
from qbox.agent.images.refs import digest_hex, validate_name
from qbox.agent.images.runner import CommandRunner, run_umoci
from qbox.agent.images.store_tree import ImageInfo, StoreTree, human_size
from qbox.core.errors import InternalError, ValidationError

ProgressCallback = Callable[[str], None]


async def commit_layer(
    tree: StoreTree,
    runner: CommandRunner,
    name: str,
    base_digest: str,
    layer_dir: Path,
    *,
    env: dict[str, str],
    working_dir: str | None,
    user: str | None,
    kernels: list[dict[str, Any]],
    progress: ProgressCallback,
) -> ImageInfo:
    """Store ``layer_dir`` as a new layer on ``base_digest``, tagged ``name`` (see ``ImageStore.commit``)."""
    validate_name(name)
    digest_hex(base_digest)
    tmp = tree.tmp_dir.resolve()
    if not Path(layer_dir).resolve().is_relative_to(tmp):
        raise ValueError(f"layer dir {layer_dir} must be inside a work_dir() of the store")
    for key in env:
        if not key or "=" in key:
            raise ValidationError(f"environment variable name {key!r} is not valid")
    tree.prepare_dirs()
    async with file_lock(tree.lock_path, on_wait=lambda: progress("waiting for the image store…")):
        tree.lower_dirs(base_digest)  # NotFoundError unless the base can be mounted
        base_record = tree.record(base_digest)
        work = Path(tempfile.mkdtemp(prefix="commit-", dir=tmp))
        try:
            # The layer is mounted as it is: same cleaning as an unpacked image.
            await asyncio.to_thread(remove_device_nodes, layer_dir, keep_whiteouts=True)
            tar = await asyncio.to_thread(write_layer_tar, layer_dir, work / "layer.tar")
            progress(f"committing layer: {tar.files} files, {human_size(tar.size_bytes)}")
            base_tag = f"qbox-base-{digest_hex(base_digest)}"
            tree.layout.tag(base_tag, base_digest)
            await run_umoci(runner, ["raw", "add-layer", "--image", f"{tree.layout_dir}:{base_tag}",
                                     "--tag", name, "--history.created_by", "qbox template build",
                                     str(work / "layer.tar")])
            options = [f"--config.env={key}={value}" for key, value in env.items()]
            if working_dir is not None:
                options.append(f"--config.workingdir={working_dir}")
            if user is not None:
                options.append(f"--config.user={user}")
            if options:
                await run_umoci(runner, ["config", "--image", f"{tree.layout_dir}:{name}", "--no-history",
                                         *options])
            digest = tree.layout.digest_of(name)
            diff_ids = tree.layout.config(digest).get("rootfs", {}).get("diff_ids", [])
            if not diff_ids or diff_ids[-1] != tar.diff_id:
                raise InternalError(f"umoci stored a different layer than {tar.diff_id}")
            layer_hex = digest_hex(tar.diff_id)
            dest = tree.root / "layers" / layer_hex
            if dest.exists():
                # The same changes were committed before: the stored copy is identical.
                await asyncio.to_thread(shutil.rmtree, layer_dir, True)
            else:
                os.rename(layer_dir, dest)
            below = list(base_record["layers"]) if base_record is not None else []
            root_base = base_record["base"] if base_record is not None else base_digest
            write_json(tree.record_path(digest),
                       {"base": root_base, "layers": [layer_hex, *below], "kernels": kernels})
            tree.touched[digest] = tree.touched[base_digest] = time.monotonic()
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
    return tree.info(digest)
