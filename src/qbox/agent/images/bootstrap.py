"""Building a recipe's Debian root filesystem and making it fit for sandboxes.

mmdebstrap (debootstrap when mmdebstrap is missing) installs the recipe's
packages from the host's own mirror; then the tree gets the sandbox user,
identity files that do not name the build host, and no apt caches.

Everything here runs as root on a tree that is not yet trusted to be
well-formed, so paths inside it are never followed through symlinks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from qbox.agent.images.apt_sources import AptSource
from qbox.agent.images.recipe import KernelSpec, Recipe, SandboxUser, Wheel
from qbox.agent.images.runner import CommandRunner
from qbox.core.errors import InternalError

DEFAULT_MIRROR = "http://deb.debian.org/debian"

ProgressCallback = Callable[[str], None]

MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE_RE = re.compile(r"\\([0-7]{3})")
_PYTHON_NAME_RE = re.compile(r"python3\.[0-9]+")
KERNELSPEC_DIR = "usr/local/share/jupyter/kernels"


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
    if recipe.wheels:
        await install_wheels(recipe.wheels, target, runner, progress)
    for spec in recipe.kernelspecs:
        write_kernelspec(target, spec)
    if recipe.compile_dirs:
        await compile_python(recipe.compile_dirs, target, runner, progress)
    for warmup in recipe.user_warmups:
        await run_as_user(recipe, target, warmup, runner, progress)
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


def python_site_dir(rootfs: Path) -> str:
    """Where the image's python3 finds local packages: ``usr/local/lib/python3.X/dist-packages``.

    Read from the ``/usr/bin/python3`` symlink Debian ships, without running anything.
    """
    try:
        name = os.readlink(rootfs / "usr/bin/python3")
    except OSError as exc:
        raise InternalError(f"the new rootfs has no /usr/bin/python3 symlink: {exc}") from exc
    if not _PYTHON_NAME_RE.fullmatch(name):
        raise InternalError(f"/usr/bin/python3 in the new rootfs points at {name!r}, not python3.X")
    return f"usr/local/lib/{name}/dist-packages"


async def install_wheels(
    wheels: Sequence[Wheel], rootfs: Path, runner: CommandRunner, progress: ProgressCallback
) -> None:
    """Download each pinned wheel on the host (pip checks its hash) and unzip it into the image."""
    site = python_site_dir(rootfs)
    with tempfile.TemporaryDirectory(prefix="qbox-wheels-") as tmp:
        for index, wheel in enumerate(wheels):
            progress(f"fetching wheel {wheel.requirement}…")
            dest = Path(tmp) / str(index)
            dest.mkdir()
            requirements = Path(tmp) / f"{index}.txt"
            requirements.write_text(f"{wheel.requirement} --hash=sha256:{wheel.sha256}\n")
            argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
                    "--disable-pip-version-check", "-d", str(dest), "-r", str(requirements)]  # fmt: skip
            result = await runner.run(argv)
            if not result.ok:
                raise InternalError(f"pip download {wheel.requirement} failed: {result.output_tail}")
            files = sorted(dest.glob("*.whl"))
            if len(files) != 1:
                raise InternalError(f"pip download {wheel.requirement} left {len(files)} wheels, not 1")
            unpack_wheel(files[0], rootfs, site)


def unpack_wheel(path: Path, rootfs: Path, site: str) -> None:
    """Install a pure-Python wheel the way pip would, minus scripts and data files."""
    if not path.name.endswith("-none-any.whl"):
        # The host's pip picked it for the host's Python, not the image's.
        raise InternalError(f"wheel {path.name} is not pure Python (…-none-any.whl)")
    with zipfile.ZipFile(path) as archive:
        members = [(member, _wheel_target(member.filename)) for member in archive.infolist()]
        for member, rel in members:
            if member.is_dir():
                continue
            target_rel = f"{site}/{rel}"
            _make_dirs(rootfs, str(Path(target_rel).parent))
            _write_bytes(rootfs, target_rel, archive.read(member))
        dist_info = {rel.split("/")[0] for _, rel in members if rel.split("/")[0].endswith(".dist-info")}
        for name in dist_info:
            _write_bytes(rootfs, f"{site}/{name}/INSTALLER", b"qbox\n")


def _wheel_target(name: str) -> str:
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise InternalError(f"wheel member {name!r} is not a plain relative path")
    if parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        raise InternalError(f"wheel member {name!r} installs outside site-packages, which is not supported")
    return name


def write_kernelspec(rootfs: Path, spec: KernelSpec) -> None:
    directory = f"{KERNELSPEC_DIR}/{spec.name}"
    _make_dirs(rootfs, directory)
    _write_file(rootfs, f"{directory}/kernel.json", json.dumps(spec.kernel_json(), indent=1, sort_keys=True) + "\n")


async def compile_python(
    directories: Sequence[str], rootfs: Path, runner: CommandRunner, progress: ProgressCallback
) -> None:
    present = [d for d in directories if (found := _inside(rootfs, d.lstrip("/"))) is not None and found.is_dir()]
    if not present:
        return
    progress("byte-compiling Python modules…")
    # No -j: the chroot has no /dev/shm, which compileall's worker pool needs.
    result = await runner.run(["chroot", str(rootfs), "python3", "-m", "compileall", "-q", *present])
    if not result.ok:
        # Files that do not compile (test data, Python 2 leftovers) cannot be
        # imported either; the rest got compiled, which is what counts.
        progress(f"compileall reported errors: {result.output_tail}")


async def run_as_user(
    recipe: Recipe, rootfs: Path, argv: Sequence[str], runner: CommandRunner, progress: ProgressCallback
) -> None:
    """Run ``argv`` in the image as the sandbox user, with the image's environment."""
    user = recipe.user
    progress(f"warming up: {' '.join(argv)}")
    command = [
        "chroot", f"--userspec={user.uid}:{user.gid}", f"--groups={user.gid}", str(rootfs),
        "env", "-i", f"HOME={user.home}", f"USER={user.name}", *recipe.env,
        "sh", "-c", 'cd "$HOME" && exec "$@"', "sh", *argv,
    ]  # fmt: skip
    result = await runner.run(command)
    if not result.ok:
        raise InternalError(f"{' '.join(argv)} in the new rootfs failed: {result.output_tail}")


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
    _write_bytes(rootfs, rel, content.encode())


def _write_bytes(rootfs: Path, rel: str, content: bytes) -> None:
    path = _inside(rootfs, str(Path(rel).parent))
    if path is None:
        raise InternalError(f"/{Path(rel).parent} in the new rootfs is a symlink")
    target = path / Path(rel).name
    if target.is_symlink() or target.exists():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    # os.open's mode is filtered by the umask; the image's files must not be.
    os.chmod(target, 0o644)


def _make_dirs(rootfs: Path, rel: str) -> None:
    """``mkdir -p rootfs/rel`` (mode 0755), refusing to pass through a symlink."""
    current = rootfs
    for part in Path(rel).parts:
        current = current / part
        if current.is_symlink():
            raise InternalError(f"/{rel} in the new rootfs goes through a symlink")
        if not current.is_dir():
            current.mkdir()
            os.chmod(current, 0o755)


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
