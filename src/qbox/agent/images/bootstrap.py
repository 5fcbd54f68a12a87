"""Building a recipe's Debian root filesystem and making it fit for sandboxes.

mmdebstrap (debootstrap when mmdebstrap is missing) installs the recipe's
packages from the host's own mirror; then the tree gets the sandbox user,
identity files that do not name the build host, and no apt caches.

Everything here runs as root on a tree that is not yet trusted to be
well-formed, so paths inside it are never followed through symlinks.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qbox.agent.images.apt_sources import AptSource
from qbox.agent.images.runner import CommandRunner
from qbox.core.errors import InternalError

if TYPE_CHECKING:
    from qbox.agent.images.recipe import Recipe, SandboxUser

DEFAULT_MIRROR = "http://deb.debian.org/debian"

ProgressCallback = Callable[[str], None]

MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


def mmdebstrap_argv(recipe: Recipe, target: Path, sources: Sequence[AptSource]) -> list[str]:
    # unshare mode as root keeps the chroot's /proc, /sys and /dev mounts in a
    # private mount namespace: a killed build cannot leave mounts behind in
    # the build dir (which we later delete recursively).
    argv = [
        "mmdebstrap",
        "--mode=unshare",
        f"--variant={recipe.variant}",
        f"--components={','.join(recipe.components)}",
        f"--include={','.join(recipe.packages)}",
        *(f"--dpkgopt={option}" for option in recipe.dpkg_options),
        recipe.suite,
        str(target),
    ]
    # With no mirror argument mmdebstrap uses deb.debian.org plus updates and
    # security for a stable suite; that is the right default off Debian hosts.
    argv += [source.one_line() for source in sources]
    return argv


def debootstrap_argv(recipe: Recipe, target: Path, sources: Sequence[AptSource]) -> list[str]:
    main = next((s for s in sources if s.suite == recipe.suite), None)
    return [
        "debootstrap",
        f"--variant={recipe.variant}",
        f"--components={','.join(recipe.components)}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(target),
        main.uri if main else DEFAULT_MIRROR,
    ]


def default_sources(recipe: Recipe) -> list[AptSource]:
    """What mmdebstrap would configure by itself; used to finish a debootstrap tree."""
    comps = recipe.components
    return [
        AptSource(DEFAULT_MIRROR, recipe.suite, comps),
        AptSource(DEFAULT_MIRROR, f"{recipe.suite}-updates", comps),
        AptSource("http://deb.debian.org/debian-security", f"{recipe.suite}-security", comps),
    ]


async def build_rootfs(
    recipe: Recipe,
    target: Path,
    sources: Sequence[AptSource],
    runner: CommandRunner,
    progress: ProgressCallback,
) -> str:
    """Build the recipe's root filesystem into ``target`` (which must not exist).

    Returns the bootstrap tool used.
    """
    tool = _pick_tool()
    if tool == "mmdebstrap":
        argv = mmdebstrap_argv(recipe, target, sources)
    else:
        argv = debootstrap_argv(recipe, target, sources)
    progress(f"{tool}: building Debian {recipe.suite} with {', '.join(recipe.packages)}…")
    result = await runner.run(argv, on_output=lambda line: progress(f"{tool}: {line.removeprefix('I: ')}"))
    if not result.ok:
        raise InternalError(f"{tool} failed (exit {result.returncode}): {result.output_tail}")
    if tool == "debootstrap":
        # debootstrap knows one mirror; give the image the full set apt should use.
        lines = [s.one_line() for s in (sources or default_sources(recipe))]
        _write_file(target, "etc/apt/sources.list", "\n".join(lines) + "\n")
    progress("configuring the sandbox user…")
    await add_sandbox_user(recipe.user, target, runner)
    neutralise_identity(target)
    slim(target)
    return tool


def _pick_tool() -> str:
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool):
            return tool
    raise InternalError("neither mmdebstrap nor debootstrap is installed (apt-get install mmdebstrap)")


async def add_sandbox_user(user: SandboxUser, rootfs: Path, runner: CommandRunner) -> None:
    """Create the sandbox user with the image's own shadow tools (run via chroot)."""
    commands = [
        ["groupadd", "--gid", str(user.gid), user.name],
        [
            "useradd",
            "--uid", str(user.uid),
            "--gid", str(user.gid),
            "--home-dir", user.home,
            "--create-home",
            "--shell", user.shell,
            user.name,
        ],
    ]  # fmt: skip
    for argv in commands:
        result = await runner.run(["chroot", str(rootfs), *argv])
        if not result.ok:
            raise InternalError(f"{argv[0]} in the new rootfs failed: {result.output_tail}")


def neutralise_identity(rootfs: Path) -> None:
    """Replace the build host's hostname and DNS config, which the bootstrap copied in.

    The sandbox layer provides the real ones per sandbox (in its upper dir);
    these are only placeholders so the files exist and name nothing of ours.
    """
    _write_file(rootfs, "etc/hostname", "localhost\n")
    _write_file(
        rootfs,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    )
    _write_file(rootfs, "etc/resolv.conf", "")


# Directories whose contents are build leftovers (relative to the rootfs).
# debootstrap leaves device nodes in /dev; the runtime mounts its own /dev.
_EMPTIED_DIRS = ("var/lib/apt/lists", "var/cache/apt/archives", "tmp", "var/tmp", "dev")
# Kept inside those: apt expects its lock files and partial/ dirs to exist.
_KEPT_NAMES = frozenset({"lock", "partial"})
_REMOVED_FILES = (
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/cache/ldconfig/aux-cache",
)


def slim(rootfs: Path) -> None:
    """Drop apt lists and caches, logs and temp files; mmdebstrap did most already."""
    for rel in _EMPTIED_DIRS:
        directory = _inside(rootfs, rel)
        if directory is None or not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            if entry.name in _KEPT_NAMES:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    for rel in _REMOVED_FILES:
        path = _inside(rootfs, rel)
        if path is not None and path.is_file():
            path.unlink()


def _inside(rootfs: Path, rel: str) -> Path | None:
    """``rootfs/rel`` if no component of it is a symlink, else None.

    Packages could make a directory a symlink to an absolute path, which on
    the host (outside a chroot) would point at the host's own files.
    """
    root = rootfs.resolve()
    path = root / rel
    try:
        resolved = path.resolve()
    except OSError:
        return None
    return path if resolved == path else None


def _write_file(rootfs: Path, rel: str, content: str) -> None:
    path = _inside(rootfs, str(Path(rel).parent))
    if path is None:
        raise InternalError(f"/{Path(rel).parent} in the new rootfs is a symlink")
    target = path / Path(rel).name
    if target.is_symlink() or target.exists():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(content)
    # os.open's mode is filtered by the umask; the image's files must not be.
    os.chmod(target, 0o644)


def remove_tree(path: Path) -> None:
    """``rm -rf path``, refusing if anything is mounted inside it.

    A bootstrap killed half-way (debootstrap) can leave /proc or /sys mounted
    in its chroot; a recursive delete would then walk into the host's.
    """
    if not path.exists():
        return
    prefix = str(path.resolve()).rstrip("/") + "/"
    for mount_point in _mount_points():
        if mount_point.startswith(prefix) or mount_point + "/" == prefix:
            raise InternalError(f"{mount_point} is still mounted; unmount it and retry")
    shutil.rmtree(path)


def _mount_points() -> list[str]:
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            # mountinfo escapes space, tab, newline and backslash as octal.
            points.append(_OCTAL_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points
