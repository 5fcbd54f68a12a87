from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from qbox.agent.images import bootstrap
from qbox.agent.images.apt_sources import AptSource
from qbox.agent.images.bootstrap import (
    build_rootfs,
    debootstrap_argv,
    mmdebstrap_argv,
    neutralise_identity,
    remove_tree,
    slim,
)
from qbox.agent.images.recipe import PYTHON_RECIPE, KernelSpec, Recipe, Wheel
from qbox.core.errors import InternalError

from .fakes import FakeRunner, Reply, fake_mmdebstrap, fake_pip, make_wheel

SOURCES = [
    AptSource("http://mirror.corp.example/debian", "bookworm", ("main",)),
    AptSource("http://mirror.corp.example/debian-security", "bookworm-security", ("main",)),
]


def test_mmdebstrap_argv_uses_the_host_mirrors(tmp_path: Path) -> None:
    argv = mmdebstrap_argv(PYTHON_RECIPE, tmp_path / "rootfs", SOURCES)

    assert argv[0] == "mmdebstrap"
    assert "--mode=unshare" in argv
    assert "--variant=minbase" in argv
    assert f"--include={','.join(PYTHON_RECIPE.packages)}" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert argv[-4:] == [
        "bookworm",
        str(tmp_path / "rootfs"),
        "deb http://mirror.corp.example/debian bookworm main",
        "deb http://mirror.corp.example/debian-security bookworm-security main",
    ]


def test_mmdebstrap_argv_without_host_mirrors_leaves_the_default(tmp_path: Path) -> None:
    argv = mmdebstrap_argv(PYTHON_RECIPE, tmp_path / "rootfs", [])
    assert argv[-2:] == ["bookworm", str(tmp_path / "rootfs")]


def test_debootstrap_argv_uses_the_main_suite_mirror(tmp_path: Path) -> None:
    argv = debootstrap_argv(PYTHON_RECIPE, tmp_path / "r", list(reversed(SOURCES)))
    assert argv[0] == "debootstrap"
    assert argv[-3:] == ["bookworm", str(tmp_path / "r"), "http://mirror.corp.example/debian"]
    assert debootstrap_argv(PYTHON_RECIPE, tmp_path / "r", [])[-1] == "http://deb.debian.org/debian"


def _tree(root: Path) -> Path:
    for rel in ("etc", "dev", "tmp", "var/lib/apt/lists/partial", "var/cache/apt/archives"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("buildhost\n")
    (root / "etc/resolv.conf").write_text("nameserver 10.1.2.3\n")
    (root / "var/lib/apt/lists/lock").write_text("")
    (root / "var/lib/apt/lists/x_Packages").write_text("x")
    (root / "var/cache/apt/pkgcache.bin").write_text("x")
    (root / "var/cache/apt/archives/a.deb").write_text("x")
    (root / "dev/null").write_text("")
    (root / "tmp/leftover").mkdir()
    return root


def test_identity_files_name_nothing_of_the_build_host(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")
    old = os.umask(0o077)
    try:
        neutralise_identity(rootfs)
    finally:
        os.umask(old)

    assert (rootfs / "etc/hostname").read_text() == "localhost\n"
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert "127.0.0.1\tlocalhost" in (rootfs / "etc/hosts").read_text()
    for name in ("hostname", "hosts", "resolv.conf"):
        assert (rootfs / "etc" / name).stat().st_mode & 0o777 == 0o644


def test_identity_files_are_replaced_not_followed(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")
    outside = tmp_path / "host-resolv.conf"
    outside.write_text("nameserver 10.1.2.3\n")
    (rootfs / "etc/resolv.conf").unlink()
    (rootfs / "etc/resolv.conf").symlink_to(outside)

    neutralise_identity(rootfs)

    assert outside.read_text() == "nameserver 10.1.2.3\n"
    assert not (rootfs / "etc/resolv.conf").is_symlink()


def test_slim_drops_caches_and_keeps_apt_lock_files(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")

    slim(rootfs)

    assert sorted(p.name for p in (rootfs / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]
    assert not (rootfs / "var/cache/apt/pkgcache.bin").exists()
    assert list((rootfs / "var/cache/apt/archives").iterdir()) == []
    assert list((rootfs / "tmp").iterdir()) == []
    assert list((rootfs / "dev").iterdir()) == []


def test_slim_never_follows_a_symlink_out_of_the_rootfs(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "rootfs")
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    (host_tmp / "precious").write_text("keep me")
    (rootfs / "tmp/leftover").rmdir()
    (rootfs / "tmp").rmdir()
    (rootfs / "tmp").symlink_to(host_tmp)

    slim(rootfs)

    assert (host_tmp / "precious").read_text() == "keep me"


async def test_debootstrap_fallback_gets_the_full_sources_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/sbin/debootstrap" if tool == "debootstrap" else None)
    runner = FakeRunner(handlers={"debootstrap": fake_mmdebstrap(), sys.executable: fake_pip()})
    lines: list[str] = []

    tool = await build_rootfs(PYTHON_RECIPE, tmp_path / "rootfs", [], runner, lines.append)

    assert tool == "debootstrap"
    assert runner.tools() == [
        "debootstrap", "chroot groupadd", "chroot useradd", "pip download", "chroot python3", "chroot env",
    ]  # fmt: skip
    assert (tmp_path / "rootfs/etc/apt/sources.list").read_text().splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert (tmp_path / "rootfs/etc/hostname").read_text() == "localhost\n"
    assert "debootstrap: running apt-get update..." in lines


async def test_no_bootstrap_tool_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(InternalError, match="neither mmdebstrap nor debootstrap"):
        await build_rootfs(PYTHON_RECIPE, tmp_path / "rootfs", [], FakeRunner(), lambda _: None)


async def test_failed_user_creation_is_internal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/mmdebstrap")
    runner = FakeRunner(handlers={"mmdebstrap": fake_mmdebstrap()})
    runner.handlers["chroot"] = lambda argv: Reply(4, ("useradd: UID 1000 is not unique",))

    with pytest.raises(InternalError, match="UID 1000 is not unique"):
        await build_rootfs(PYTHON_RECIPE, tmp_path / "rootfs", [], runner, lambda _: None)


def test_remove_tree_refuses_a_tree_with_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "build" / "rootfs"
    (tree / "proc").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"22 1 0:21 / / rw - ext4 /dev/vda rw\n88 22 0:42 / {tree / 'proc'} rw,nosuid - proc proc rw\n"
    )
    monkeypatch.setattr(bootstrap, "MOUNTINFO", mountinfo)

    with pytest.raises(InternalError, match="still mounted"):
        remove_tree(tmp_path / "build")
    assert (tree / "proc").is_dir()

    mountinfo.write_text("22 1 0:21 / / rw - ext4 /dev/vda rw\n")
    remove_tree(tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_mount_points_with_spaces_are_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "a b"
    (tree / "proc").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    escaped = str(tree / "proc").replace(" ", "\\040")
    mountinfo.write_text(f"88 22 0:42 / {escaped} rw - proc proc rw\n")
    monkeypatch.setattr(bootstrap, "MOUNTINFO", mountinfo)

    with pytest.raises(InternalError):
        remove_tree(tree)


# -- wheels, kernelspecs, compiling and warm-ups -----------------------------

PIN = "0" * 64
SITE = "usr/local/lib/python3.11/dist-packages"


def _extras_recipe(**changes: object) -> Recipe:
    base = Recipe(
        name="t1",
        suite="bookworm",
        packages=("python3",),
        wheels=(Wheel("demo_kernel==1.2", PIN),),
        kernelspecs=(KernelSpec("demo", "Demo", "demo", ("python3", "-m", "demo_kernel", "-f", "{connection_file}"),
                                env=(("PS1", "$"),)),),  # fmt: skip
        compile_dirs=("/usr/lib/python3/dist-packages", "/usr/local/lib/python3.11", "/not/there"),
        user_warmups=(("python3", "-c", "import demo_kernel"),),
        env=("PATH=/usr/bin:/bin", "MPLBACKEND=Agg"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _extras_runner(wheel: bytes | None = None) -> FakeRunner:
    wheels = {"demo_kernel==1.2": wheel} if wheel is not None else None
    return FakeRunner(handlers={"mmdebstrap": fake_mmdebstrap(), sys.executable: fake_pip(wheels)})


@pytest.fixture
def mmdebstrap_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/mmdebstrap" if tool == "mmdebstrap" else None)


async def test_wheels_kernelspecs_compile_and_warmups(tmp_path: Path, mmdebstrap_host: None) -> None:
    rootfs = tmp_path / "rootfs"
    runner = _extras_runner()
    lines: list[str] = []

    await build_rootfs(_extras_recipe(), rootfs, [], runner, lines.append)

    site = rootfs / SITE
    assert (site / "demo_kernel/__init__.py").read_text() == "__version__ = '1.2'\n"
    assert (site / "demo_kernel-1.2.dist-info/INSTALLER").read_text() == "qbox\n"
    assert oct((site / "demo_kernel/__init__.py").stat().st_mode & 0o777) == "0o644"
    assert oct(site.stat().st_mode & 0o777) == "0o755"
    spec = json.loads((rootfs / "usr/local/share/jupyter/kernels/demo/kernel.json").read_text())
    assert spec == {
        "argv": ["python3", "-m", "demo_kernel", "-f", "{connection_file}"],
        "display_name": "Demo",
        "language": "demo",
        "env": {"PS1": "$"},
    }
    pip, compile_call, warmup = runner.calls[3:]
    # Fetched on the host (fake_pip checks the pinned --hash line), never by pip in the image.
    assert pip[0] == sys.executable and {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(pip)
    # Only the directories that exist in the image are compiled, by the image's python3.
    assert compile_call == ["chroot", str(rootfs), "python3", "-m", "compileall", "-q", "/usr/local/lib/python3.11"]
    # The warm-up runs as the sandbox user, in its home, with the image's environment only.
    assert warmup[:4] == ["chroot", "--userspec=1000:1000", "--groups=1000", str(rootfs)]
    assert warmup[4:10] == ["env", "-i", "HOME=/home/user", "USER=user", "PATH=/usr/bin:/bin", "MPLBACKEND=Agg"]
    assert warmup[-3:] == ["python3", "-c", "import demo_kernel"]
    assert "fetching wheel demo_kernel==1.2…" in lines


async def test_a_failed_warmup_fails_the_build(tmp_path: Path, mmdebstrap_host: None) -> None:
    runner = _extras_runner()
    runner.handlers["chroot"] = lambda argv: Reply(1, ("ImportError: no demo",)) if "env" in argv else None
    with pytest.raises(InternalError, match="no demo"):
        await build_rootfs(_extras_recipe(), tmp_path / "rootfs", [], runner, lambda _: None)


async def test_compile_errors_are_reported_not_fatal(tmp_path: Path, mmdebstrap_host: None) -> None:
    runner = _extras_runner()
    failure = Reply(1, ("*** Error compiling 'bad.py'",))
    runner.handlers["chroot"] = lambda argv: failure if "compileall" in argv else None
    lines: list[str] = []
    await build_rootfs(_extras_recipe(), tmp_path / "rootfs", [], runner, lines.append)
    assert any("Error compiling 'bad.py'" in line for line in lines)


async def test_pip_failure_is_internal(tmp_path: Path, mmdebstrap_host: None) -> None:
    runner = _extras_runner()
    runner.handlers[sys.executable] = lambda argv: Reply(1, ("THESE PACKAGES DO NOT MATCH THE HASHES",))
    with pytest.raises(InternalError, match="DO NOT MATCH THE HASHES"):
        await build_rootfs(_extras_recipe(), tmp_path / "rootfs", [], runner, lambda _: None)


@pytest.mark.parametrize(
    "member",
    ["../escape.py", "/etc/passwd", "demo_kernel/../../x.py", "demo_kernel\\x.py", "demo_kernel-1.2.data/scripts/x"],
)
async def test_wheel_members_outside_site_packages_are_refused(
    tmp_path: Path, mmdebstrap_host: None, member: str
) -> None:
    wheel = make_wheel("demo_kernel", "1.2", {member: b"x"})
    with pytest.raises(InternalError, match="wheel member"):
        await build_rootfs(_extras_recipe(), tmp_path / "rootfs", [], _extras_runner(wheel), lambda _: None)
    assert not (tmp_path / "escape.py").exists()


async def test_wheel_purelib_data_goes_to_site_packages(tmp_path: Path, mmdebstrap_host: None) -> None:
    wheel = make_wheel("demo_kernel", "1.2", {"demo_kernel-1.2.data/purelib/extra_mod.py": b"X = 1\n"})
    await build_rootfs(_extras_recipe(), tmp_path / "rootfs", [], _extras_runner(wheel), lambda _: None)
    assert (tmp_path / "rootfs" / SITE / "extra_mod.py").read_text() == "X = 1\n"


async def test_a_symlinked_site_dir_is_not_followed(tmp_path: Path, mmdebstrap_host: None) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rootfs = tmp_path / "rootfs"
    runner = _extras_runner()
    make_tree = runner.handlers["mmdebstrap"]

    def bootstrap_with_trap(argv: list[str]) -> Reply | None:
        reply = make_tree(argv)
        (rootfs / "usr/local/lib").mkdir(parents=True)
        (rootfs / "usr/local/lib/python3.11").symlink_to(outside)
        return reply

    runner.handlers["mmdebstrap"] = bootstrap_with_trap
    with pytest.raises(InternalError, match="symlink"):
        await build_rootfs(_extras_recipe(), rootfs, [], runner, lambda _: None)
    assert list(outside.iterdir()) == []


def test_python_site_dir_comes_from_the_python3_symlink(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").symlink_to("python3.12")
    assert bootstrap.python_site_dir(tmp_path) == "usr/local/lib/python3.12/dist-packages"
    (tmp_path / "usr/bin/python3").unlink()
    (tmp_path / "usr/bin/python3").symlink_to("/usr/bin/../../etc")
    with pytest.raises(InternalError, match="not python3.X"):
        bootstrap.python_site_dir(tmp_path)


def test_a_non_pure_wheel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("demo/__init__.py", b"")
    with pytest.raises(InternalError, match="not pure Python"):
        bootstrap.unpack_wheel(path, tmp_path, SITE)


@pytest.mark.parametrize(
    "wheel",
    [("bash_kernel", PIN), ("bash_kernel>=0.10", PIN), ("bash_kernel==0.10; rm -rf /", PIN), ("x==1", "abc")],
)
def test_wheels_must_be_pinned_with_a_hash(wheel: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        Wheel(*wheel)


def test_kernelspec_names_are_plain() -> None:
    with pytest.raises(ValueError):
        KernelSpec("../python3", "x", "python", ("python3",))
    assert "env" not in KernelSpec("k", "K", "k", ("k",)).kernel_json()
