"""Copying images into the store (skopeo copy, then ``umoci unpack`` once) and out to a registry.

An import's copy always runs (skopeo downloads no blob the store already
has, and for a registry ref it picks up a moved tag); the unpack is skipped
when that manifest is already unpacked. Registry credentials never reach a
progress line or an error message.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qbox.agent.images.layers import remove_device_nodes
from qbox.agent.images.layout import read_json
from qbox.agent.images.lock import file_lock
from qbox.agent.images.refs import (
    RegistryCredentials,
    authfile,
    digest_hex,
    is_insecure_registry,
    local_path,
    normalize_ref,
    registry_host,
    validate_name,
)
from qbox.agent.images.runner import CommandResult, CommandRunner
from qbox.agent.images.store_tree import ImageInfo, StoreTree, human_size
from qbox.core.errors import InternalError, QboxError, ValidationError

ProgressCallback = Callable[[str], None]

# skopeo exits 1 for every failure; these prefixes of its message are the
# ones that mean "this source cannot be read" (unknown transport, missing
# path, unknown tag, registry refusal) rather than a fault of this host.
_SOURCE_FAILURE_MARKERS = ("initializing source", "Invalid source name", "unauthorized")
_COPYING_BLOB_RE = re.compile(r"Copying blob (?:sha256:)?([0-9a-f]{12,64})")


async def import_image(
    tree: StoreTree,
    runner: CommandRunner,
    insecure: frozenset[str],
    ref: str,
    name: str,
    on_progress: ProgressCallback,
    credentials: RegistryCredentials | None,
) -> ImageInfo:
    """Copy ``ref`` into ``tree`` as ``name`` and unpack it once (see ``ImageStore.import_image``)."""
    source = normalize_ref(ref)
    validate_name(name)
    secret = credentials.redact if credentials is not None else _same
    progress = _redacting(on_progress, secret)
    path = local_path(source)
    # Checked here so that a missing file is a plain 400 whatever skopeo says.
    if path is not None and not Path(path).exists():
        raise ValidationError(f"image source {path} does not exist")
    tree.prepare_dirs()
    async with file_lock(
        tree.lock_path,
        on_wait=lambda: progress("waiting for another image operation to finish…"),
    ):
        await asyncio.to_thread(tree.clear_leftovers)
        progress(f"pulling {source}")
        present = tree.layout.blob_hexes()
        started = time.monotonic()
        result = await _copy_in(tree, runner, insecure, source, name, credentials, present, progress)
        if not result.ok:
            raise _copy_error(source, result, secret)
        digest = tree.layout.digest_of(name)
        _report_layers(tree, digest, present, time.monotonic() - started, progress)
        if tree.has(digest):
            progress(f"{digest} is already unpacked")
        else:
            await _unpack(tree, runner, name, digest, progress)
        # The gc's grace counts from here, when the image is whole: an unpack that took longer
        # than the grace must not leave a build's image to the next gc before it is pushed.
        tree.touched[digest] = time.monotonic()
    info = tree.info(digest)
    progress(f"image {digest} stored as {name} ({human_size(info.size_bytes)})")
    return info


async def push_image(
    tree: StoreTree,
    runner: CommandRunner,
    insecure: frozenset[str],
    digest: str,
    dest: str,
    on_progress: ProgressCallback,
) -> str:
    """Copy the image to the registry reference ``dest``; return ``docker://<repo>@<digest>``."""
    target = normalize_ref(dest)
    registry = registry_host(target)
    if registry is None:
        raise ValidationError(f"push destination {dest!r} must be a registry reference")
    tag = tree.layout.tag_of(digest)
    argv = ["skopeo", "copy"]
    if is_insecure_registry(registry, insecure):
        argv.append("--dest-tls-verify=false")
    work = Path(tempfile.mkdtemp(prefix="push-", dir=tree.tmp_dir))
    try:
        digest_file = work / "digest"
        result = await runner.run(
            [*argv, "--digestfile", str(digest_file), f"oci:{tree.layout_dir}:{tag}", target],
            on_output=lambda line: None,
        )
        if not result.ok:
            raise InternalError(f"push to {target} failed: {result.message()}")
        pushed = digest_file.read_text().strip()
        digest_hex(pushed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = target.removeprefix("docker://").partition("@")[0]
    repo, colon, tag_part = name.rpartition(":")
    if not colon or "/" in tag_part:
        repo = name
    ref = f"docker://{repo}@{pushed}"
    on_progress(f"pushed {ref}")
    return ref


async def _copy_in(
    tree: StoreTree,
    runner: CommandRunner,
    insecure: frozenset[str],
    source: str,
    name: str,
    credentials: RegistryCredentials | None,
    present: set[str],
    progress: ProgressCallback,
) -> CommandResult:
    registry = registry_host(source)
    argv = ["skopeo", "copy"]
    if registry is not None and is_insecure_registry(registry, insecure):
        argv.append("--src-tls-verify=false")
    announced: set[str] = set()

    def on_output(line: str) -> None:
        # skopeo (without a terminal) names each blob as it starts on it
        # and nothing when it is done; a blob the layout already has is
        # reused without a download, so only the others are announced.
        match = _COPYING_BLOB_RE.search(line)
        if match is None:
            return
        short = match.group(1)[:12]
        if short not in announced and not any(h.startswith(short) for h in present):
            announced.add(short)
            progress(f"downloading sha256:{short}…")

    with authfile(credentials, registry, tree.tmp_dir) as auth:
        if auth is not None:
            argv += ["--src-authfile", str(auth)]
        argv += [source, f"oci:{tree.layout_dir}:{name}"]
        return await runner.run(argv, on_output=on_output)


def _report_layers(
    tree: StoreTree, digest: str, present: set[str], seconds: float, progress: ProgressCallback
) -> None:
    layers = [blob for blob in tree.layout.manifest(digest).get("layers", []) if isinstance(blob, dict)]
    downloaded = 0
    for number, blob in enumerate(layers, 1):
        hex_ = digest_hex(str(blob.get("digest", "")))
        size = int(blob.get("size", 0))
        if hex_ in present:
            state = "already present"
        else:
            state = "downloaded"
            downloaded += size
            present.add(hex_)  # the same blob twice in one image is fetched once
        progress(f"layer {number}/{len(layers)} sha256:{hex_[:12]} {human_size(size)}: {state}")
    count = "1 layer" if len(layers) == 1 else f"{len(layers)} layers"
    progress(f"pulled {count}, {human_size(downloaded)} downloaded in {seconds:.1f} s")


async def _unpack(tree: StoreTree, runner: CommandRunner, name: str, digest: str, progress: ProgressCallback) -> None:
    progress(f"unpacking {digest}")
    work = Path(tempfile.mkdtemp(prefix=f"unpack-{digest_hex(digest)[:12]}-", dir=tree.tmp_dir))
    try:
        bundle = work / "bundle"
        result = await runner.run(
            ["umoci", "unpack", "--image", f"{tree.layout_dir}:{name}", str(bundle)],
            on_output=lambda line: progress(f"umoci: {line}"),
        )
        if not result.ok:
            raise InternalError(f"umoci unpack of {digest} failed: {result.message()}")
        _check_unpacked(bundle, digest)
        removed = await asyncio.to_thread(remove_device_nodes, bundle / "rootfs")
        if removed:
            progress(f"removed {removed} device node(s) from the image")
        final = tree.bundle_dir(digest)
        if final.exists():
            # A bundle without its rootfs (has() said no): only a hand-edited
            # store gets here. Move it aside so the rename below can publish.
            final.rename(work / "stale")
        # The rename is the publish step: readers see nothing or everything.
        bundle.rename(final)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


def _check_unpacked(bundle: Path, digest: str) -> None:
    if not (bundle / "rootfs").is_dir():
        raise InternalError(f"umoci unpack of {digest} produced no rootfs")
    # Guards the name→digest step: the bundle must be of the manifest we resolved.
    meta = read_json(bundle / "umoci.json")
    walk = meta.get("from_descriptor_path", {}).get("descriptor_walk", [])
    if walk and walk[0].get("digest") != digest:
        raise InternalError(f"umoci unpacked {walk[0].get('digest')} instead of {digest}")


def _copy_error(ref: str, result: CommandResult, redact: Callable[[str], str]) -> QboxError:
    message = redact(result.message())
    if any(marker in result.output_tail for marker in _SOURCE_FAILURE_MARKERS):
        return ValidationError(f"cannot read image {ref}: {message}")
    return InternalError(f"skopeo copy of {ref} failed: {message}")


def _redacting(progress: ProgressCallback, redact: Callable[[str], str]) -> ProgressCallback:
    return lambda line: progress(redact(line))


def _same(text: str) -> str:
    return text
