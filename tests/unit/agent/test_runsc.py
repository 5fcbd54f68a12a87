"""The runsc driver: its pure decisions, and its command lines against a fake runsc."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
from pathlib import Path

import pytest

from qbox.agent.runtime.base import ExitStatus, ProcessSpec
from qbox.agent.runtime.runsc import (
    RunscRuntime,
    global_flags,
    is_gofer_of,
    pick_platform,
    probe_features,
)
from qbox.agent.runtime.runsc_spec import (
    acl_with_search_for,
    grant_search,
    network_mode,
    paths_the_gofer_opens,
    sandbox_root_uid,
    spec_for_runsc,
    tasks_limit,
)
from qbox.agent.runtime.runsc_waiter import (
    exit_status_from_log,
    start_failure,
    waiter_failure,
    without_waiter_error,
)
from qbox.agent.spec import DEFAULT_PATH, SandboxConfig, oci_config

FAKE_RUNSC = Path(__file__).with_name("fake_runsc.py")


def _config(tmp_path: Path, **extra: object) -> dict:  # type: ignore[type-arg]
    return oci_config(SandboxConfig(id="sb_runsctest1", rootfs=tmp_path / "rootfs",
                                    hostname="h", init_source=Path("/usr/bin/catatonit"),
                                    vcpus=1, memory_mb=128, **extra))  # type: ignore[arg-type]


# --- the spec ----------------------------------------------------------------

def test_spec_for_runsc_drops_seccomp_and_binds_the_rootfs_tmp(tmp_path: Path) -> None:
    config = _config(tmp_path, seccomp={"defaultAction": "SCMP_ACT_ERRNO"})
    adapted = spec_for_runsc(config, tmp_path / "bundle", bind_tmp=True)
    assert "seccomp" not in adapted["linux"]
    assert "seccomp" in config["linux"]  # the input is left alone
    tmp = [m for m in adapted["mounts"] if m["destination"] == "/tmp"]
    assert tmp == [{"destination": "/tmp", "type": "bind", "source": str(tmp_path / "rootfs/tmp"),
                    "options": ["bind", "rw", "nosuid", "nodev"]}]
    # What runsc honours is kept as it is.
    for key in ("resources", "namespaces", "cgroupsPath"):
        assert adapted["linux"][key] == config["linux"][key]
    nproc = {"type": "RLIMIT_NPROC", "soft": 32, "hard": 32}  # what 128 MiB holds
    assert adapted["process"] == {**config["process"],
                                  "rlimits": [*config["process"]["rlimits"], nproc]}


def test_spec_for_runsc_leaves_tmp_to_gvisor_without_a_real_directory(tmp_path: Path) -> None:
    adapted = spec_for_runsc(_config(tmp_path), tmp_path, bind_tmp=False)
    assert not [m for m in adapted["mounts"] if m["destination"] == "/tmp"]


def test_spec_for_runsc_uses_gvisors_own_sysfs(tmp_path: Path) -> None:
    config = _config(tmp_path, sysfs_source=tmp_path / "sys")
    assert [m["type"] for m in config["mounts"] if m["destination"] == "/sys"] == ["bind"]
    adapted = spec_for_runsc(config, tmp_path, bind_tmp=False)
    assert [m["type"] for m in adapted["mounts"] if m["destination"] == "/sys"] == ["sysfs"]


def test_network_mode_follows_the_namespace_the_spec_joins(tmp_path: Path) -> None:
    assert network_mode(_config(tmp_path)) == "none"
    assert network_mode(_config(tmp_path, netns_path=Path("/run/netns/qbox-x"))) == "host"


def test_the_gofer_of_a_user_namespaced_sandbox_runs_as_its_root(tmp_path: Path) -> None:
    from qbox.agent.idmap import IdMapping

    assert sandbox_root_uid(_config(tmp_path)) is None
    config = _config(tmp_path, id_mapping=IdMapping(100_000),
                     resolv_conf=tmp_path / "net" / "resolv.conf")
    assert sandbox_root_uid(config) == 100_000
    # The spec names the rootfs relative to the bundle then; the gofer opens it absolutely.
    assert config["root"]["path"] == "rootfs"
    assert paths_the_gofer_opens(config, tmp_path) == [
        tmp_path / "rootfs", Path("/usr/bin/catatonit"), tmp_path / "net" / "resolv.conf"]
    tmp = [m for m in spec_for_runsc(config, tmp_path, bind_tmp=True)["mounts"]
           if m["destination"] == "/tmp"]
    assert tmp[0]["source"] == str(tmp_path / "rootfs" / "tmp")


def test_search_permission_is_added_for_one_uid_only() -> None:
    acl = acl_with_search_for(None, 0o700, 100_000)
    entries = [struct.unpack_from("<HHI", acl, offset) for offset in range(4, len(acl), 8)]
    assert struct.unpack_from("<I", acl)[0] == 2
    assert entries == [(0x01, 0o7, 0xFFFFFFFF), (0x02, 0o1, 100_000), (0x04, 0o0, 0xFFFFFFFF),
                       (0x10, 0o1, 0xFFFFFFFF), (0x20, 0o0, 0xFFFFFFFF)]
    # An existing ACL keeps its entries; granting twice changes nothing.
    assert acl_with_search_for(acl, 0o710, 100_000) == acl
    both = acl_with_search_for(acl, 0o710, 200_000)
    assert (0x02, 0o1, 200_000) in [struct.unpack_from("<HHI", both, o)
                                    for o in range(4, len(both), 8)]


def test_grant_search_opens_only_closed_directories(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    (closed / "inner").chmod(0o755)
    grant_search([closed / "inner" / "rootfs"], 100_000)
    assert os.getxattr(closed, "system.posix_acl_access")
    with pytest.raises(OSError):
        os.getxattr(closed / "inner", "system.posix_acl_access")  # others may search it already
    assert closed.stat().st_mode & 0o777 == 0o710  # the mask shows as the group bits


# --- the build ----------------------------------------------------------------

def test_platform_and_flags_follow_what_the_runsc_build_offers() -> None:
    assert pick_platform("ptrace\nkvm\nsystrap\n") == "systrap"
    assert pick_platform("kvm\nptrace\n") == "ptrace"  # Debian 12's build
    newer = "  -directfs\n    \tx\n  -overlay2 value\n  -file-access value\n"
    assert global_flags("systrap", newer) == [
        "--platform=systrap", "--directfs=false", "--overlay2=none", "--file-access=shared"]
    older = "  -overlay2 value\n  -file-access value\n"
    assert global_flags("ptrace", older) == [
        "--platform=ptrace", "--overlay2=none", "--file-access=shared"]


def test_exit_status_comes_from_the_waiters_own_log_line() -> None:
    text = ("I1127 14:57:26.829011    6092 main.go:222] Exiting with status: 0\n"
            "I1127 14:57:27.891544    6098 main.go:222] Exiting with status: 9\n")
    assert exit_status_from_log(text, 6098) == ExitStatus(137, 9)
    assert exit_status_from_log(text, 6092) == ExitStatus(0)
    assert exit_status_from_log(text, 1) is None
    exited = "I1127 14:57:28.392866    6113 main.go:222] Exiting with status: 35072\n"
    assert exit_status_from_log(exited, 6113) == ExitStatus(137, 0)


def test_the_gofer_is_found_by_its_bundle() -> None:
    bundle = Path("/data/sandboxes/sb_x")
    assert is_gofer_of(["runsc-gofer", "--root=/r", "gofer", f"--bundle={bundle}"], bundle)
    assert is_gofer_of(["runsc-gofer", "gofer", "--bundle", str(bundle), "--spec-fd=3"], bundle)
    assert not is_gofer_of(["runsc-gofer", "gofer", "--bundle=/data/sandboxes/sb_y"], bundle)
    assert not is_gofer_of(["runsc-sandbox", f"--bundle={bundle}"], bundle)


# --- against a fake runsc ----------------------------------------------------

@pytest.fixture
def fake_runsc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    binary = tmp_path / "runsc"
    binary.write_text(f"#!{sys.executable}\nimport runpy\n"
                      f"runpy.run_path({str(FAKE_RUNSC)!r}, run_name='__main__')\n")
    binary.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_RUNSC_CALLS", str(calls))
    return binary, calls


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _process(*argv: str) -> ProcessSpec:
    return ProcessSpec(args=list(argv), env={"PATH": DEFAULT_PATH}, cwd="/",
                       uid=os.getuid(), gid=os.getgid())


async def test_command_lines_and_process_lifecycle(tmp_path: Path,
                                                   fake_runsc: tuple[Path, Path]) -> None:
    binary, calls = fake_runsc
    flags = await probe_features(str(binary))
    assert flags == ["--platform=systrap", "--directfs=false", "--overlay2=none",
                     "--file-access=shared"]
    driver = RunscRuntime(str(binary), tmp_path / "root", flags=flags,
                          scratch_dir=tmp_path / "scratch")
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "tmp").mkdir(parents=True)
    config = _config(tmp_path, netns_path=Path("/run/netns/qbox-x"),
                     seccomp={"defaultAction": "SCMP_ACT_ERRNO"})
    config["root"]["path"] = str(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(config))
    try:
        state = await driver.run("sb_runsctest1", bundle)
        assert state.pid is not None
        run = _calls(calls)[-1]
        root = str((tmp_path / "root").absolute())
        assert run == ["--root", root, *flags, "--network=host",
                       f"--debug-log={bundle / 'runsc-logs'}/", "--debug-command=run,gofer",
                       "run", "--detach", "--bundle",
                       str(bundle), "--pid-file", str(bundle / "init.pid"), "sb_runsctest1"]
        written = json.loads((bundle / "config.json").read_text())
        assert "seccomp" not in written["linux"]
        assert {"destination": "/tmp", "type": "bind", "source": str(bundle / "rootfs/tmp"),
                "options": ["bind", "rw", "nosuid", "nodev"]} in written["mounts"]

        handle = await driver.exec("sb_runsctest1", _process("sh", "-c", "echo out; exit 137"))
        out, status = await asyncio.gather(handle.stdout.read(), handle.wait())
        assert (out, status) == (b"out\n", ExitStatus(137, 0))
        exec_call = _calls(calls)[-1]
        assert exec_call[:2 + len(flags)] == ["--root", root, *flags]
        debug_log, command = exec_call[2 + len(flags)], exec_call[3 + len(flags):]
        assert debug_log.startswith("--debug-log=")
        assert command[:2] == ["exec", "--detach"] and command[-1] == "sb_runsctest1"
        assert {"--process", "--pid-file", "--internal-pid-file"} <= set(command)
        # Nothing of the exec is left in the scratch directory once it ended.
        assert list((tmp_path / "scratch").iterdir()) == []

        sleeper = await driver.exec("sb_runsctest1", _process("sleep", "30"))
        sleeper.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(sleeper.wait(), 10) == ExitStatus(143, 15)
        assert ["kill", "--pid", str(sleeper.pid), "sb_runsctest1", "15"] == \
            _calls(calls)[-1][2 + len(flags):]
        sleeper.send_signal(signal.SIGKILL)  # exited: nothing is sent
        await asyncio.sleep(0.05)
        assert _calls(calls)[-1][2 + len(flags)] == "kill"
        assert len([c for c in _calls(calls) if "kill" in c]) == 1
    finally:
        await driver.delete("sb_runsctest1")
        await driver.close()
    assert await driver.state("sb_runsctest1") is None


async def test_a_command_that_cannot_start_is_a_start_error(
        tmp_path: Path, fake_runsc: tuple[Path, Path]) -> None:
    from qbox.agent.runtime.base import CommandStartError

    binary, _ = fake_runsc
    driver = RunscRuntime(str(binary), tmp_path / "root", scratch_dir=tmp_path / "scratch")
    try:
        with pytest.raises(CommandStartError, match="no-such-command"):
            await driver.exec("sb_runsctest1", _process("no-such-command"))
        assert list((tmp_path / "scratch").iterdir()) == []
    finally:
        await driver.close()


def test_exec_logs_of_a_gone_agent_are_swept(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stale = scratch / "sb_runsctest1.999999999.7.log"
    ours = scratch / f"sb_runsctest1.{os.getpid()}.8.log"
    stale.write_text("x")
    ours.write_text("x")
    RunscRuntime("runsc", tmp_path / "root", scratch_dir=scratch)
    assert not stale.exists() and ours.exists()


async def test_the_sandbox_process_exit_code_tells_how_the_init_died(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qbox.agent.runtime.crun import OciCliRuntime

    driver = RunscRuntime("runsc", tmp_path / "root", scratch_dir=tmp_path / "scratch")
    for sentry, init in ((ExitStatus(137), ExitStatus(137, 9)), (ExitStatus(0), ExitStatus(0)),
                         (ExitStatus(137, 9), ExitStatus(137, 9)), (None, None)):
        async def sentry_status(self: OciCliRuntime, container_id: str,
                                status: ExitStatus | None = sentry) -> ExitStatus | None:
            return status

        monkeypatch.setattr(OciCliRuntime, "wait", sentry_status)
        assert await driver.wait("sb_runsctest1") == init


def test_parse_ps_reads_parents_from_the_table() -> None:
    from qbox.agent.runtime.runsc import parse_ps
    table = (b"UID       PID       PPID      C         TTY       STIME     TIME      CMD\n"
             b"0         1         0         0         ?         16:45     0s        init\n"
             b"1000      2         0         3         ?         16:45     0s        sh -c x\n"
             b"1000      3         2         2         ?         16:45     0s        sleep\n")
    assert parse_ps(table) == {1: 0, 2: 0, 3: 2}
    assert parse_ps(b"[1,2,3]\n") == {} and parse_ps(b"") == {}


# --- limits and what runsc says ------------------------------------------------

@pytest.mark.parametrize(("memory_mb", "pids", "expected"), [
    (64, 4096, 16), (128, 4096, 32), (512, 4096, 160), (8192, 4096, 2720), (8192, 1000, 1000),
])
def test_a_gvisor_sandbox_may_run_the_tasks_its_memory_holds(
        tmp_path: Path, memory_mb: int, pids: int, expected: int) -> None:
    config = oci_config(SandboxConfig(id="sb_runsctest1", rootfs=tmp_path, hostname="h",
                                      init_source=Path("/usr/bin/catatonit"), vcpus=1,
                                      memory_mb=memory_mb, pids_limit=pids,
                                      rlimits={"RLIMIT_NPROC": (1, 1), "RLIMIT_CORE": (0, 0)}))
    assert tasks_limit(config) == expected
    rlimits = spec_for_runsc(config, tmp_path, bind_tmp=False)["process"]["rlimits"]
    assert {"type": "RLIMIT_NPROC", "soft": expected, "hard": expected} in rlimits
    assert [r["type"] for r in rlimits].count("RLIMIT_NPROC") == 1
    assert tasks_limit({"linux": {"resources": {}}}) is None


def test_the_waiters_failure_is_read_from_its_own_log_line() -> None:
    log = ("I1127 15:00:00.000000     4242 main.go:222] Exiting with status: 0\n"
           "W1127 15:00:00.000000     4343 util.go:64] FATAL ERROR: waiting on pid 5: urpc "
           'method "containerManager.WaitPID" failed: EOF\n')
    assert waiter_failure(log, 4343) == ('waiting on pid 5: urpc method '
                                         '"containerManager.WaitPID" failed: EOF')
    assert waiter_failure(log, 4242) is None


def test_a_start_failure_keeps_the_kernels_reason_not_runscs_words() -> None:
    assert start_failure('executing processes for container: executing command "nope" in '
                         "sandbox: no such file or directory\n") == "no such file or directory"
    again = start_failure('executing processes for container: executing command "/bin/echo ok" '
                          "in sandbox: try again")
    assert again.startswith("resource temporarily unavailable") and "executing" not in again
    assert start_failure("") == "the runtime gave no reason"


async def _relayed(*chunks: bytes, pid: int = 5) -> bytes:
    source = asyncio.StreamReader()
    relayed, task = without_waiter_error(source, pid)
    for chunk in chunks:
        source.feed_data(chunk)
        await asyncio.sleep(0)
    source.feed_eof()
    await task
    return await relayed.read()


async def test_the_waiters_last_words_never_reach_the_commands_stderr() -> None:
    error = b'waiting on pid 5: urpc method "containerManager.WaitPID" failed: EOF\n'
    assert await _relayed(b"oops\n", error) == b"oops\n"
    assert await _relayed(b"oops\nwaiting on", b" pid 5: urpc", b" failed: EOF\n") == b"oops\n"
    # The command's own lines, even ones that look alike, pass as they are.
    assert await _relayed(error, b"more\n") == error + b"more\n"
    assert await _relayed(error, pid=6) == error
    assert await _relayed(b"waiting on pid 5: no newline") == b"waiting on pid 5: no newline"
    assert await _relayed(b"partial line, no newline") == b"partial line, no newline"


async def test_output_is_relayed_as_it_comes() -> None:
    source = asyncio.StreamReader()
    relayed, task = without_waiter_error(source, 5)
    source.feed_data(b"line one\npart")
    assert await asyncio.wait_for(relayed.readexactly(13), 5) == b"line one\npart"
    source.feed_data(b"\nwait")  # could be the waiter's: held back until it cannot be
    await asyncio.sleep(0.01)
    source.feed_data(b"ing for Godot\n")
    assert await asyncio.wait_for(relayed.readexactly(19), 5) == b"\nwaiting for Godot\n"
    source.feed_eof()
    await task


async def test_a_command_whose_sandbox_died_has_an_unknown_end_and_clean_stderr(
        tmp_path: Path, fake_runsc: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    binary, _ = fake_runsc
    monkeypatch.setenv("FAKE_RUNSC_SANDBOX_DIES", "1")
    driver = RunscRuntime(str(binary), tmp_path / "root", scratch_dir=tmp_path / "scratch")
    try:
        handle = await driver.exec("sb_runsctest1", _process("sh", "-c", "echo out; echo err >&2"))
        out, err, status = await asyncio.gather(handle.stdout.read(), handle.stderr.read(),
                                                handle.wait())
        assert (out, err, status) == (b"out\n", b"err\n", ExitStatus(-1))
        assert list((tmp_path / "scratch").iterdir()) == []
    finally:
        await driver.close()
