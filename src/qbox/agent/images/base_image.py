"""The built-in base image: built once per machine from its recipe into a shared cache.

Every store on the machine (every agent, every test run) imports it from the
cache::

    CACHE/base-images/<recipe key>/oci/          OCI layout, tag "latest"
    CACHE/base-images/<recipe key>/recipe.json   what was built, when, from where
    CACHE/base-images/<recipe key>.lock          flock held while building
    CACHE/base-images/.build-<recipe key>-*/     a build in progress (or crashed)

An entry is complete exactly when its directory exists: it is assembled in
a ``.build-*`` directory and renamed into place, so a reader never sees a
half-built image and an existing one is never rebuilt.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from qbox.agent.images.apt_sources import DEFAULT_APT_DIR, host_sources
from qbox.agent.images.bootstrap import build_rootfs, remove_tree
from qbox.agent.images.lock import file_lock
from qbox.agent.images.recipe import PYTHON_RECIPE, Recipe
from qbox.agent.images.runner import CommandRunner, SubprocessRunner
from qbox.agent.images.store import ImageStore
from qbox.agent.images.store_tree import ImageInfo
from qbox.core.errors import InternalError

CACHE_DIR_ENV = "QBOX_CACHE_DIR"
SYSTEM_CACHE_DIR = Path("/var/cache/qbox")
BUILTIN_TEMPLATE_NAME = "python"
BASE_IMAGE_TAG = "latest"

ProgressCallback = Callable[[str], None]


def machine_cache_dir() -> Path:
    """``$QBOX_CACHE_DIR``, else /var/cache/qbox for root, else the user's cache dir."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return SYSTEM_CACHE_DIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "qbox"


def base_image_dir(cache_dir: Path, recipe: Recipe = PYTHON_RECIPE) -> Path:
    return cache_dir / "base-images" / recipe.key()


def base_image_ref(cache_dir: Path, recipe: Recipe = PYTHON_RECIPE) -> str:
    """The skopeo source ref of the recipe's cached image (whether built or not)."""
    return f"oci:{base_image_dir(cache_dir, recipe) / 'oci'}:{BASE_IMAGE_TAG}"


def is_built(cache_dir: Path, recipe: Recipe = PYTHON_RECIPE) -> bool:
    return (base_image_dir(cache_dir, recipe) / "oci" / "index.json").is_file()


async def ensure_base_image(
    cache_dir: Path,
    on_progress: ProgressCallback | None = None,
    *,
    recipe: Recipe = PYTHON_RECIPE,
    runner: CommandRunner | None = None,
    apt_dir: Path = DEFAULT_APT_DIR,
) -> str:
    """Build the recipe's image into the cache unless it is there; return its skopeo ref.

    Safe to call from several processes at once: one builds, the others wait
    for its lock and then find the image built.
    """
    if ":" in str(cache_dir):
        raise ValueError(f"cache dir {cache_dir} must not contain ':'")
    progress = on_progress or _ignore
    ref = base_image_ref(cache_dir, recipe)
    if is_built(cache_dir, recipe):
        return ref
    images_dir = cache_dir / "base-images"
    key = recipe.key()
    async with file_lock(
        images_dir / f"{key}.lock",
        on_wait=lambda: progress("waiting for another process building the base image…"),
    ):
        if is_built(cache_dir, recipe):
            return ref
        await asyncio.to_thread(_remove_stale_builds, images_dir, key, progress)
        target = base_image_dir(cache_dir, recipe)
        if target.exists():
            # Present but incomplete: only a hand-edited cache gets here.
            await asyncio.to_thread(remove_tree, target)
        if os.geteuid() != 0:
            raise InternalError(
                "building the base image needs root (to own files as other users); "
                "run `qbox up` or the agent as root once"
            )
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=images_dir))
        # mkdtemp's 0700 would make the cache entry root-only, and keeps apt's
        # unprivileged _apt user out of the chroot while mmdebstrap downloads.
        work.chmod(0o755)
        try:
            await _build(recipe, work, runner or SubprocessRunner(), progress, apt_dir)
            # The rename publishes the entry; everything before it is invisible.
            work.rename(target)
        except BaseException:
            try:
                await asyncio.to_thread(remove_tree, work)
            except InternalError as exc:
                progress(f"leaving {work}: {exc.message}")
            raise
    progress(f"base image {key} ready")
    return ref


async def ensure_builtin_python(
    store: ImageStore, cache_dir: Path, on_progress: ProgressCallback | None = None
) -> ImageInfo:
    """Make sure the built-in ``python`` template's image is in ``store``, unpacked."""
    ref = await ensure_base_image(cache_dir, on_progress)
    return await store.import_image(ref, BUILTIN_TEMPLATE_NAME, on_progress)


async def _build(recipe: Recipe, work: Path, runner: CommandRunner, progress: ProgressCallback, apt_dir: Path) -> None:
    sources = host_sources(recipe.suite, recipe.components, apt_dir)
    if sources:
        progress(f"using the host's mirror {sources[0].uri}")
    rootfs = work / "rootfs"
    tool = await build_rootfs(recipe, rootfs, sources, runner, progress)
    progress("packing OCI image…")
    await _pack(recipe, rootfs, work / "oci", runner)
    (work / "recipe.json").write_text(
        json.dumps(
            {
                "key": recipe.key(),
                "recipe": asdict(recipe),
                "builtAt": datetime.now(UTC).isoformat(),
                "tool": tool,
                "sources": [source.one_line() for source in sources],
            },
            indent=2,
        )
        + "\n"
    )
    # The cache keeps only the OCI image; stores unpack their own copy.
    await asyncio.to_thread(remove_tree, rootfs)


async def _pack(recipe: Recipe, rootfs: Path, layout: Path, runner: CommandRunner) -> None:
    image = f"{layout}:{BASE_IMAGE_TAG}"
    config_args = [f"--config.env={entry}" for entry in recipe.env]
    config_args += [f"--config.cmd={arg}" for arg in recipe.cmd]
    steps = [
        ["umoci", "init", "--layout", str(layout)],
        ["umoci", "new", "--image", image],
        # One layer holding the whole tree; as root umoci records owners and
        # modes exactly as they are on disk.
        ["umoci", "insert", "--image", image,
         f"--history.created_by=qbox base image {recipe.key()}", str(rootfs), "/"],
        ["umoci", "config", "--image", image, "--author=qbox",
         f"--config.workingdir={recipe.working_dir}",
         f"--config.label=qbox.recipe={recipe.key()}", *config_args,
         f"--history.created_by=qbox image config {recipe.key()}"],
        # umoci new/config leave superseded manifests and configs behind.
        ["umoci", "gc", "--layout", str(layout)],
    ]  # fmt: skip
    for argv in steps:
        result = await runner.run(argv)
        if not result.ok:
            raise InternalError(f"umoci {argv[1]} failed: {result.output_tail}")


def _remove_stale_builds(images_dir: Path, key: str, progress: ProgressCallback) -> None:
    # Only called under the key's lock, so no live build owns these.
    for stale in images_dir.glob(f".build-{key}-*"):
        try:
            remove_tree(stale)
            progress(f"removed an interrupted build: {stale.name}")
        except InternalError as exc:
            progress(f"leaving {stale}: {exc.message}")
        except OSError as exc:
            # e.g. a tool orphaned by a killed agent still writing there.
            progress(f"leaving {stale}: {exc}")


def _ignore(_: str) -> None:
    pass
