"""The built-in base image: its recipe, and the machine-wide cache it is built into.

A recipe says what goes into an image (Debian suite, packages, the sandbox
user, image config). Its ``key()`` hashes all of that plus ``RECIPE_VERSION``,
so a built image is cached under its key and reused for ever: change the
recipe (or bump the version when the build steps change) and a new key
makes a new image while existing templates keep theirs.

The image is built once per machine, and every store on the machine (every
agent, every test run) imports it from the cache::

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
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from qbox.agent.images.apt_sources import DEFAULT_APT_DIR, host_sources
from qbox.agent.images.bootstrap import build_rootfs, remove_tree
from qbox.agent.images.lock import file_lock
from qbox.agent.images.runner import CommandRunner, SubprocessRunner
from qbox.agent.images.store import ImageInfo, ImageStore
from qbox.core.errors import InternalError

# Bump when the build steps change in a way the recipe's fields do not show.
RECIPE_VERSION = 2

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CACHE_DIR_ENV = "QBOX_CACHE_DIR"
SYSTEM_CACHE_DIR = Path("/var/cache/qbox")
BUILTIN_TEMPLATE_NAME = "python"
BASE_IMAGE_TAG = "latest"

# Docs, man pages and translations are most of a minimal system's size and no
# sandbox reads them; copyright files stay for licence compliance. mmdebstrap
# keeps these in the image's dpkg config, so later installs stay slim too.
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_WORD_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
# Exactly pinned: a wheel's version (and hash) must not drift between builds.
_REQUIREMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.+!-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class SandboxUser:
    name: str = "user"
    uid: int = 1000
    gid: int = 1000
    home: str = "/home/user"
    shell: str = "/bin/bash"


@dataclass(frozen=True)
class Wheel:
    """A pure-Python package Debian lacks: fetched from PyPI on the host, unzipped into the image.

    No pip runs inside the image, so nothing of PyPI's executes as root there.
    """

    requirement: str  # "name==version"
    sha256: str

    def __post_init__(self) -> None:
        if not _REQUIREMENT_RE.fullmatch(self.requirement):
            raise ValueError(f"wheel {self.requirement!r} is not pinned as name==version")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"wheel {self.requirement}: {self.sha256!r} is not a sha256 hex digest")


@dataclass(frozen=True)
class KernelSpec:
    """A Jupyter kernelspec written to /usr/local/share/jupyter/kernels/<name>/kernel.json."""

    name: str
    display_name: str
    language: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _WORD_RE.fullmatch(self.name):
            raise ValueError(f"kernelspec name {self.name!r} is not a plain lowercase name")

    def kernel_json(self) -> dict[str, object]:
        spec: dict[str, object] = {
            "argv": list(self.argv),
            "display_name": self.display_name,
            "language": self.language,
        }
        if self.env:
            spec["env"] = dict(self.env)
        return spec


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    packages: tuple[str, ...]
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)
    dpkg_options: tuple[str, ...] = SLIM_DPKG_OPTIONS
    user: SandboxUser = field(default_factory=SandboxUser)
    wheels: tuple[Wheel, ...] = ()
    kernelspecs: tuple[KernelSpec, ...] = ()
    # Byte-compiled at build time (inside the image, by its own python3), so
    # the first import in a sandbox does not write (or fail to write) .pyc files.
    compile_dirs: tuple[str, ...] = ()
    # Run in the image as the sandbox user after everything is installed, to
    # leave caches in its home (matplotlib's font list takes seconds to build).
    user_warmups: tuple[tuple[str, ...], ...] = ()
    # Image config. No User: qbox picks the user for each exec.
    env: tuple[str, ...] = (f"PATH={SANDBOX_PATH}",)
    working_dir: str = "/home/user"
    cmd: tuple[str, ...] = ("/bin/bash",)
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        # These end up in argv and in cache paths; refuse anything odd early.
        for word in (self.name, self.suite, self.variant, *self.components):
            if not _WORD_RE.fullmatch(word):
                raise ValueError(f"recipe word {word!r} is not a plain lowercase name")
        for package in self.packages:
            if not _PACKAGE_RE.fullmatch(package):
                raise ValueError(f"{package!r} is not a Debian package name")
        for directory in self.compile_dirs:
            if not directory.startswith("/") or ".." in directory.split("/"):
                raise ValueError(f"compile dir {directory!r} is not an absolute path")

    def key(self) -> str:
        """Stable id of what this recipe builds: ``<name>-<16 hex>``."""
        fields = asdict(self)
        # Package order and repeats do not change the image, so not the key.
        fields["packages"] = sorted(set(self.packages))
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


PYTHON_RECIPE = Recipe(
    name="python",
    suite="bookworm",
    packages=(
        "bash",
        "ca-certificates",
        "coreutils",
        "curl",
        "less",
        "procps",
        "python3",
        "python3-pip",
        "python3-venv",
        # `python` on PATH, as users (and the API reference's examples) expect.
        "python-is-python3",
        # Code interpreter: Jupyter kernels and the usual data-analysis stack.
        "python3-ipykernel",
        "python3-jupyter-client",
        "python3-numpy",
        "python3-pandas",
        "python3-matplotlib",
        # bash_kernel's dependencies (bash_kernel itself is a wheel below).
        "python3-pexpect",
        "python3-filetype",
    ),
    wheels=(Wheel("bash_kernel==0.10.0", "da28513230f5307c7a49e87352366304dc52b66faa207d6caed1b2bdec03c1fa"),),
    # Debian's python3-ipykernel ships the python3 kernelspec itself.
    kernelspecs=(
        KernelSpec(
            name="bash",
            display_name="Bash",
            language="bash",
            argv=("python3", "-m", "bash_kernel", "-f", "{connection_file}"),
            # As bash_kernel's own installer writes it.
            env=(("PS1", "$"),),
        ),
    ),
    compile_dirs=("/usr/lib/python3/dist-packages", "/usr/lib/python3.11", "/usr/local/lib/python3.11"),
    user_warmups=(("python3", "-c", "import matplotlib.pyplot"),),
    env=(f"PATH={SANDBOX_PATH}", "MPLBACKEND=Agg"),
)


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
