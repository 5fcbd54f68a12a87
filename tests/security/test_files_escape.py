"""Escapes through the files API: links, ``..`` chains and races planted by the sandbox.

The agent resolves every path with ``openat2(RESOLVE_IN_ROOT)`` inside the
sandbox's rootfs and acts as the sandbox user (agent/files.py). The traps are
the kinds the kernel's openat2 selftests plant (absolute links, ``..`` beyond
the root, loops, magic links), each tried with every operation; the races swap
a directory with links out of the root while the API is hammered below it.
The host canary is a directory outside every sandbox watched with inotify, so
an open that leaks nothing is caught as well as a read or a write.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.qbox_process import QboxUp
from tests.security.files_harness import (
    Files,
    HostCanary,
    expect,
    host_has,
    missing_for_every_operation,
)

pytestmark = pytest.mark.security

# --- symlink and path traps ---------------------------------------------------------------------


def test_absolute_symlinks_resolve_in_the_sandbox(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    token = secrets.token_hex(4)
    marker = f"/etc/qbox-marker-{token}"
    box.sh(f"echo inside-{token} > {marker}", user="root")
    out = box.sh(f"cd /home/user && ln -s /etc etc-link && ln -s {canary.dir} canary-link && "
                 f"ln -s {canary.file} secret-link && ln -s {canary.file} secret-link2 && "
                 f"ln -s /home/user/made-by-append dangling && echo ok")
    assert out["stdout"] == "ok\n", out

    # /etc is the sandbox's.
    assert expect(files.read(f"/home/user/etc-link/qbox-marker-{token}"), 200, canary).text == f"inside-{token}\n"
    names = [e["name"] for e in expect(files.list("/home/user/etc-link"), 200, canary).json()]
    assert f"qbox-marker-{token}" in names
    expect(files.write(f"/home/user/etc-link/new-{token}"), 403, canary, "forbidden")
    expect(files.mkdir(f"/home/user/etc-link/dir-{token}"), 403, canary, "forbidden")
    expect(files.rename(f"/home/user/etc-link/qbox-marker-{token}", "/home/user/stolen"), 403, canary)
    expect(files.delete(f"/home/user/etc-link/qbox-marker-{token}"), 403, canary, "forbidden")
    # The sandbox's root writes the sandbox's /etc, never the host's.
    expect(files.write(f"/home/user/etc-link/new-{token}", b"root", user="root"), 204, canary)
    assert box.sh(f"cat /etc/new-{token}")["stdout"] == "root"
    assert not host_has(f"new-{token}", Path("/etc"))

    # Links to the host canary name a path that does not exist in the sandbox.
    for user in (None, "root"):
        missing_for_every_operation(files, "/home/user/canary-link/secret", canary, user)
        expect(files.read("/home/user/secret-link", user), 404, canary, "not_found")
        expect(files.list("/home/user/canary-link", user), 404, canary, "not_found")
        expect(files.write("/home/user/secret-link2", b"pwned", user, append="true"), 404, canary)
    stat = expect(files.stat("/home/user/secret-link"), 200, canary).json()
    assert stat["isSymlink"] is True and stat["symlinkTarget"] == str(canary.file), stat

    # A dangling link as the target of a write: replaced by the new file (atomically), in place;
    # appending follows it, inside the root.
    expect(files.write("/home/user/secret-link", b"replaced"), 204, canary)
    out = box.sh("test -f /home/user/secret-link && ! test -L /home/user/secret-link && cat /home/user/secret-link")
    assert out["stdout"] == "replaced", out
    expect(files.write("/home/user/dangling", b"appended", append="true"), 204, canary)
    out = box.sh("test -L /home/user/dangling && cat /home/user/made-by-append")
    assert out["stdout"] == "appended", out

    # Removing or renaming a link acts on the link.
    expect(files.rename("/home/user/canary-link", "/home/user/canary-link-moved"), 204, canary)
    expect(files.delete("/home/user/canary-link-moved", recursive=True), 204, canary)
    expect(files.delete("/home/user/etc-link", user="root", recursive=True), 204, canary)
    assert box.sh(f"cat {marker}")["stdout"] == f"inside-{token}\n"
    canary.assert_untouched()


def test_dotdot_chains_clamp_at_the_sandbox_root(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    token = secrets.token_hex(4)
    box.sh(f"echo inside-{token} > /etc/qbox-marker", user="root")
    up = "/".join([".."] * 16)
    # On the host, rootfs/home/user/../../../disk.img is the sandbox's disk image and
    # rootfs/home/user/../../.. the sandbox's directory.
    out = box.sh(f"cd /home/user && ln -s {up} up && ln -s {up}{canary.dir} upc && ln -s ../../../disk.img disk "
                 "&& ln -s ../../.. three && echo ok")
    assert out["stdout"] == "ok\n", out

    # Every way of climbing out names the sandbox's own /tmp/qbox-canary-…/secret: missing there.
    climbs = [f"/../../../../../..{canary.file}", f"../../../../../../../..{canary.file}",
              f"/home/user/up{canary.file}", "/home/user/upc/secret", f"/home/user/three{canary.file}"]
    for path in climbs:
        for user in (None, "root"):
            expect(files.read(path, user), 404, canary, "not_found")
            expect(files.list(path.rsplit("/", 1)[0], user), 404, canary, "not_found")
            assert expect(files.stat(path, user), 200, canary).json()["exists"] is False
            expect(files.rename(path, "/home/user/stolen", user), 404, canary, "not_found")
            expect(files.delete(path, user, recursive=True), 404, canary, "not_found")
    # Creating it creates it in the sandbox, where every other climb then finds it.
    expect(files.write(climbs[0], b"inside"), 204, canary)
    assert box.sh(f"cat {canary.file}")["stdout"] == "inside"
    for path in climbs:
        assert expect(files.read(path, "root"), 200, canary).text == "inside"
    expect(files.write(climbs[2], b"again", append="true"), 204, canary)
    expect(files.mkdir(climbs[3] + "-dir"), 204, canary)
    expect(files.rename(climbs[3] + "-dir", climbs[1] + "-moved"), 204, canary)
    assert box.sh(f"test -d {canary.file}-moved && cat {canary.file}")["stdout"] == "insideagain"
    expect(files.delete(climbs[4]), 204, canary)
    assert box.sh(f"test -e {canary.file} || echo gone")["stdout"] == "gone\n"

    for path in ("/../../etc/qbox-marker", "../../../../../etc/qbox-marker", "/home/user/up/etc/qbox-marker",
                 "/home/user/three/etc/qbox-marker"):
        assert expect(files.read(path), 200, canary).text == f"inside-{token}\n"
    expect(files.read("/home/user/disk"), 404, canary, "not_found")
    expect(files.read("/home/user/three/config.json"), 404, canary, "not_found")
    for path in ("/home/user/up", "/home/user/three"):
        names = {e["name"] for e in expect(files.list(path), 200, canary).json()}
        assert {"etc", "home", "proc"} <= names and not names & {"disk.img", "rootfs", "config.json"}, names
    expect(files.write("/home/user/up/qbox-top", b"x"), 403, canary, "forbidden")
    canary.assert_untouched()


def test_symlink_loops_are_validation_errors(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    # 45 links in a row: more than the 40 the kernel (and gVisor) follow.
    out = box.sh("cd /home/user && ln -s loop2 loop1 && ln -s loop1 loop2 && ln -s self self && "
                 "for i in $(seq 0 44); do ln -s chain$((i + 1)) chain$i; done && mkdir chain45 && echo ok")
    assert out["stdout"] == "ok\n", out

    for path in ("/home/user/loop1", "/home/user/self", "/home/user/chain0"):
        for user in (None, "root"):
            expect(files.read(path, user), 400, canary, "validation_error")
            expect(files.list(path, user), 400, canary, "validation_error")
            expect(files.write(path, b"x", user, append="true"), 400, canary, "validation_error")
            stat = expect(files.stat(path, user), 200, canary).json()  # the link itself
            assert stat["exists"] and stat["isSymlink"], stat
            inner = path + "/x"
            expect(files.read(inner, user), 400, canary, "validation_error")
            expect(files.stat(inner, user), 400, canary, "validation_error")
            expect(files.write(inner, b"x", user), 400, canary, "validation_error")
            expect(files.list(inner, user), 400, canary, "validation_error")
            expect(files.mkdir(inner, user), 400, canary, "validation_error")
            expect(files.mkdir(inner, user, parents=False), 400, canary, "validation_error")
            expect(files.rename(inner, "/home/user/y", user), 400, canary, "validation_error")
            expect(files.rename("/home/user/.bashrc", inner, user), 400, canary, "validation_error")
            expect(files.delete(inner, user), 400, canary, "validation_error")
    # A chain of 35 resolves.
    assert expect(files.list("/home/user/chain10"), 200, canary).json() == []
    # The loop itself is a name like any other: replaced by a write, removed by a delete.
    expect(files.write("/home/user/loop1", b"plain"), 204, canary)
    assert expect(files.read("/home/user/loop1"), 200, canary).text == "plain"
    expect(files.delete("/home/user/self"), 204, canary)
    canary.assert_untouched()


def test_proc_magic_links_never_reach_the_host(make_box: Any, host_canary: HostCanary,
                                               qbox_sec: QboxUp) -> None:
    """The agent sees the rootfs, whose /proc is an empty directory (procfs is mounted over it
    only inside the sandbox): magic links there are missing, never the host's."""
    canary = host_canary
    box = make_box()
    files = Files(box)
    out = box.sh("cd /home/user && ln -s /proc/self/root magic && ln -s /proc/1/root one && echo ok")
    assert out["stdout"] == "ok\n", out
    paths = [f"/proc/self/root{canary.file}", f"/proc/1/root{canary.file}", f"/proc/thread-self/root{canary.file}",
             f"/home/user/magic{canary.file}", f"/home/user/one{canary.dir}", "/proc/self/exe",
             "/proc/self/cwd/x", "/proc/self/fd/0", "/proc/1/environ"]
    for path in paths:
        expect(files.read(path), 404, canary, "not_found")
        expect(files.read(path, "root"), 404, canary, "not_found")
        expect(files.list(path), 404, canary, "not_found")
        assert expect(files.stat(path), 200, canary).json()["exists"] is False
        expect(files.rename(path, "/home/user/stolen"), 404, canary, "not_found")
        expect(files.delete(path, recursive=True), 404, canary, "not_found")
        # Writes need /proc/self (or /home/user/magic's target) to be created: the user may not.
        expect(files.write(path), 403 if path.startswith("/proc/") else 404, canary)
        expect(files.mkdir(path), 403 if path.startswith("/proc/") else 404, canary)
    for path in ("/home/user/magic", "/home/user/one"):
        expect(files.list(path), 404, canary, "not_found")
    # The sandbox's root may create them: in the rootfs's own /proc directory, nowhere else.
    expect(files.write(f"/proc/self/root{canary.file}", b"pwned", "root"), 204, canary)
    rootfs = qbox_sec.data_dir / "sandboxes" / box.id / "rootfs"
    assert (rootfs / f"proc/self/root{canary.file}").read_bytes() == b"pwned"
    canary.assert_untouched()


def test_links_to_the_host_path_of_the_sandbox_rootfs(make_box: Any, host_canary: HostCanary,
                                                      qbox_sec: QboxUp) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    sandbox_dir = qbox_sec.data_dir / "sandboxes" / box.id
    assert (sandbox_dir / "rootfs/etc").is_dir()
    out = box.sh(f"cd /home/user && ln -s {sandbox_dir}/rootfs hostroot && ln -s {sandbox_dir} hostdir && "
                 f"ln -s {sandbox_dir}/disk.img hostdisk && echo ok")
    assert out["stdout"] == "ok\n", out
    for path in ("/home/user/hostroot/etc/passwd", "/home/user/hostdir/disk.img", "/home/user/hostdir/config.json"):
        for user in (None, "root"):
            missing_for_every_operation(files, path, canary, user)
    # Named directly, the host path is a path in the sandbox (missing there until created).
    expect(files.read(f"{sandbox_dir}/rootfs/etc/passwd"), 404, canary, "not_found")
    expect(files.read(f"{sandbox_dir}/disk.img", "root"), 404, canary, "not_found")
    expect(files.read("/home/user/hostdisk"), 404, canary, "not_found")
    expect(files.list("/home/user/hostroot"), 404, canary, "not_found")
    # Host-side: nothing was created next to the sandbox's directories.
    assert not [p.name for p in sandbox_dir.iterdir() if "renamed" in p.name or p.name == "sub"]
    canary.assert_untouched()


def test_hard_links_stay_the_same_file(make_box: Any, host_canary: HostCanary) -> None:
    canary = host_canary
    box = make_box()
    files = Files(box)
    out = box.sh("cd /home/user && echo original > f && ln f hl && echo ok")
    assert out["stdout"] == "ok\n", out
    assert expect(files.read("/home/user/hl"), 200, canary).text == "original\n"
    assert expect(files.stat("/home/user/hl"), 200, canary).json()["size"] == len("original\n")
    # The atomic replace gives the name a new file; the other name keeps the old one.
    expect(files.write("/home/user/hl", b"new"), 204, canary)
    assert box.sh("cat /home/user/f; cat /home/user/hl")["stdout"] == "original\nnew"
    # Appending writes the shared file.
    box.sh("rm /home/user/hl && ln /home/user/f /home/user/hl")
    expect(files.write("/home/user/hl", b"more\n", append="true"), 204, canary)
    assert box.sh("cat /home/user/f")["stdout"] == "original\nmore\n"
    expect(files.delete("/home/user/hl"), 204, canary)
    assert box.sh("cat /home/user/f")["stdout"] == "original\nmore\n"
    canary.assert_untouched()


# --- races --------------------------------------------------------------------------------------
