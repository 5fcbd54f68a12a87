"""The gVisor driver: runsc behind the same interface as crun (docs/isolation.md).

runsc's CLI matches crun's for run, kill, delete, state and list, so this is
``OciCliRuntime`` with its differences:

- Global flags, the same on every call: ``--platform`` (systrap; ptrace on
  builds without it), ``--directfs=false`` (only the gofer opens host files:
  the sentry, gVisor's kernel, has no host filesystem access of its own),
  ``--overlay2=none`` and ``--file-access=shared`` (the sandbox writes into
  its own overlay upper directory like under crun, where the files API and a
  disk quota see the writes, and the agent's writes are seen inside).
- ``--network`` per sandbox (``network_mode``): ``host`` when the spec joins
  a network namespace (the sandbox's veth, behind the host's nftables), else
  ``none``. gVisor's own stack (``sandbox``) refuses to start in a network
  namespace on kernels ≥ 6.11 (gVisor issue #10704, fixed after Debian's builds).
- The spec is adapted by ``spec_for_runsc`` when the sandbox starts.
- Commands: under gVisor a command is not a host process. ``runsc exec
  --detach`` leaves a *waiter* behind (a ``runsc exec`` that waits for the
  command through the sandbox's control socket); the agent, as subreaper,
  adopts it as it adopts crun's commands (``child.py``). The command's pid
  comes from ``--internal-pid-file``, signals go through ``runsc kill --pid``,
  and since the waiter's exit code folds death by signal N into 128+N, the
  real wait status is read from the line the waiter logs as it exits. What
  runsc itself says (a start failure, the waiter's error when the sandbox dies
  under it) stays on the agent's log (``runsc_waiter.py``).
- The spec's pids limit is no limit under gVisor (the host's pids cgroup
  counts the sentry's threads): ``spec_for_runsc`` sets ``RLIMIT_NPROC``,
  which gVisor's kernel enforces (``runsc_spec.tasks_limit``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from qbox.agent import proctree
from qbox.agent import cgroups
from qbox.agent.runtime.base import (
    CommandStartError,
    ContainerState,
    ContainerStatus,
    ExitStatus,
    ProcessSpec,
    RuntimeCapability,
    RuntimeFailure,
)
from qbox.agent.runtime.child import AdoptedChild, _children_of
from qbox.agent.runtime.crun import UNKNOWN_EXIT, OciCliRuntime
from qbox.agent.runtime.pipes import ConsoleSocket, ProcessPipes, ended_stream, start_on_terminal
from qbox.agent.runtime.runsc_spec import (
    grant_search,
    is_real_directory,
    network_mode,
    paths_the_gofer_opens,
    rootfs_of,
    sandbox_root_uid,
    spec_for_runsc,
)
from qbox.agent.runtime.runsc_waiter import (
    exit_status_from_log,
    start_failure,
    waiter_failure,
    without_waiter_error,
)
from qbox.agent.spec import oci_process

log = logging.getLogger("qbox.agent.runtime")

# What every call passes besides --root and --platform (see the module docstring).
ISOLATION_FLAGS = ("--directfs=false", "--overlay2=none", "--file-access=shared")

def pick_platform(platforms_help: str) -> str:
    """systrap when this runsc has it (Debian 13's), else ptrace (Debian 12's).

    Never kvm: on these hosts /dev/kvm is nested PVM and runsc hangs on it.
    """
    return "systrap" if "systrap" in platforms_help.split() else "ptrace"


def global_flags(platform: str, flags_help: str) -> list[str]:
    """The flags of every call, leaving out the ones this runsc build does not know."""
    known = set(re.findall(r"^\s+-([a-z0-9-]+)", flags_help, re.MULTILINE))
    chosen = [f"--platform={platform}"]
    for flag in ISOLATION_FLAGS:
        if flag[2:].split("=")[0] in known:
            chosen.append(flag)
    return chosen


def parse_ps(output: bytes) -> dict[int, int]:
    """``runsc ps``'s table (``UID PID PPID C TTY STIME TIME CMD``): each pid's parent.
    (Its ``--format json`` lists only the pids.)"""
    lines = output.decode(errors="replace").splitlines()
    if not lines:
        return {}
    header = lines[0].split()
    try:
        pid_at, ppid_at = header.index("PID"), header.index("PPID")
    except ValueError:
        return {}
    parents = {}
    for line in lines[1:]:
        fields = line.split()
        try:
            parents[int(fields[pid_at])] = int(fields[ppid_at])
        except (IndexError, ValueError):
            continue
    return parents


def fatal_errors(logs_dir: Path) -> bytes:
    """The FATAL lines of runsc's per-process logs (the gofer's and the sandbox's reasons)."""
    lines = []
    for path in sorted(logs_dir.glob("*")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines += [f"{path.name.split('.')[-2]}: {line.split('FATAL ERROR: ', 1)[1]}"
                  for line in text.splitlines() if "FATAL ERROR: " in line]
    return ("\n" + "\n".join(lines)).encode() if lines else b""


def is_gofer_of(argv: list[str], bundle: Path) -> bool:
    """Whether a process with this command line is the gofer of the sandbox in ``bundle``."""
    return bool(argv) and argv[0] == "runsc-gofer" and (
        f"--bundle={bundle}" in argv or any(a == "--bundle" and b == str(bundle)
                                            for a, b in zip(argv, argv[1:], strict=False)))


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").split("\0")
    except OSError:
        return []


class RunscProcess:
    """A command in a gVisor sandbox, known by its in-sandbox pid and watched through its waiter."""

    def __init__(self, runtime: RunscRuntime, container_id: str, pid: int,
                 waiter: AdoptedChild, log_path: Path, stdin: asyncio.StreamWriter | None,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 console: int | None = None, relay: asyncio.Task[None] | None = None) -> None:
        self._runtime = runtime
        self._container_id = container_id
        self._pid = pid
        self._waiter = waiter
        self._log_path = log_path
        # Signals are delivered by runsc processes: one at a time, in order.
        self._signalling = asyncio.Lock()
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.console = console
        self._relay = relay  # feeds ``stderr`` (see ``without_waiter_error``)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def host_pid(self) -> int:
        """The waiter's pid (the command itself has none on the host)."""
        return self._waiter.pid

    async def wait(self) -> ExitStatus:
        """The command's status; unknown (-1) when the waiter failed to learn it (the
        sandbox died under it: ``RunningSandbox`` tells the user why)."""
        folded = await self._waiter.wait()
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            text = ""
        self._log_path.unlink(missing_ok=True)
        logged = exit_status_from_log(text, self._waiter.pid)
        if logged is None and (failure := waiter_failure(text, self._waiter.pid)) is not None:
            log.warning("pid %s in %s: the runsc waiter failed: %s",
                        self._pid, self._container_id, failure)
            return UNKNOWN_EXIT
        return logged or folded or UNKNOWN_EXIT

    def send_signal(self, signo: int) -> None:
        if self._waiter.exited:
            return  # ended: its pid may already belong to another process
        self._runtime.deliver_later(self._signal(signo))

    async def _signal(self, signo: int) -> None:
        async with self._signalling:
            if not self._waiter.exited:
                await self._runtime.signal_process(self._container_id, self._pid, signo)

    async def signal_tree(self, signo: int) -> int:
        """The command and its descendants by PPID, as ``runsc ps`` lists them. Once the
        command has exited, its pid may be another's, and its orphans now hang from
        the sandbox's init: nothing is signalled then (what is left escapes)."""
        async with self._signalling:
            if self._waiter.exited:
                return 0
            # The command itself even when ``runsc ps`` fails.
            tree = proctree.descendants(await self._runtime.process_parents(self._container_id),
                                        [self._pid])
            for pid in sorted(tree):
                await self._runtime.signal_process(self._container_id, pid, signo)
            return len(tree)


class RunscRuntime(OciCliRuntime):
    """A RuntimeDriver over runsc (gVisor)."""

    # Its PTYs are the Sentry's own: the host's end is nobody's inside.
    capabilities = RuntimeCapability.ISOLATES

    def __init__(self, binary: str, root: Path, *, scratch_dir: Path,
                 flags: list[str] | None = None, name: str = "runsc") -> None:
        super().__init__(binary, root, scratch_dir=scratch_dir, name=name)
        self.flags = list(flags if flags is not None else ["--platform=systrap",
                                                            *ISOLATION_FLAGS])
        self._deliveries: set[asyncio.Task[None]] = set()
        self._gofers: dict[str, AdoptedChild] = {}
        self._cgroups: dict[str, str] = {}
        self._sweep_logs()

    def _sweep_logs(self) -> None:
        """Remove the exec logs of commands an agent that is gone had running
        (``<container>.<agent pid>.<n>.log``: nobody will read them)."""
        for path in self._scratch.glob("*.log"):
            agent_pid = path.name.split(".")[-3]
            if agent_pid.isdigit() and not Path(f"/proc/{agent_pid}").exists():
                path.unlink(missing_ok=True)

    def _command(self, *args: str) -> list[str]:
        return [self._binary, "--root", str(self._root), *self.flags, *args]

    async def run(self, container_id: str, bundle: Path) -> ContainerState:
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        rootfs = rootfs_of(config, bundle)
        config = spec_for_runsc(config, bundle, bind_tmp=is_real_directory(rootfs / "tmp"))
        config_path.write_text(json.dumps(config))
        root_uid = sandbox_root_uid(config)
        if root_uid is not None:
            await asyncio.to_thread(grant_search, paths_the_gofer_opens(config, bundle),
                                    root_uid)
        pid_file = bundle / "init.pid"
        pid_file.unlink(missing_ok=True)
        # As with crun: the sandbox keeps runsc's stdio, so no pipes here.
        log_path = bundle / "runtime.log"
        # Why the gofer failed to start is only in its own log (not the
        # sandbox's: that one would grow with every exec).
        logs_dir = bundle / "runsc-logs"
        with open(log_path, "wb") as log_file:
            rc, _, _ = await self._call(f"--network={network_mode(config)}",
                                        f"--debug-log={logs_dir}/", "--debug-command=run,gofer",
                                        "run", "--detach",
                                        "--bundle", str(bundle), "--pid-file", str(pid_file),
                                        container_id,
                                        stdout=subprocess.DEVNULL, stderr=log_file.fileno())
        # The sandbox and gofer processes outlive runsc and become ours.
        self._orphans.poke()
        if rc != 0:
            cgroups.remove_sandbox(config.get("linux", {}).get("cgroupsPath", ""), timeout=0)
            raise self._failure("run", log_path.read_bytes() + fatal_errors(logs_dir))
        pid = int(pid_file.read_text())  # the sandbox process (the sentry)
        self._inits[container_id] = AdoptedChild(pid)
        self._watch_gofer(container_id, bundle)
        self._cgroups[container_id] = config.get("linux", {}).get("cgroupsPath", "")
        return ContainerState(container_id, ContainerStatus.RUNNING, pid)

    async def wait(self, container_id: str) -> ExitStatus | None:
        """The init's status. The sandbox process exits with 128+N when its init died of
        signal N (catatonit itself never exits above 128)."""
        status = await super().wait(container_id)
        if status is not None and not status.signal and status.exit_code > 128:
            return ExitStatus.killed_by(status.exit_code - 128)
        return status

    def _watch_gofer(self, container_id: str, bundle: Path) -> None:
        # `runsc delete` waits until the gofer is gone, and as our child it is
        # gone only once reaped: leaving it to the orphan sweep would make
        # every delete run into runsc's 5 s timeout.
        for pid in _children_of(os.getpid()) - AdoptedChild.watched.keys():
            if is_gofer_of(_cmdline(pid), bundle):
                try:
                    self._gofers[container_id] = AdoptedChild(pid)
                except ProcessLookupError:
                    pass
                return

    async def exec(self, container_id: str, process: ProcessSpec, *,  # type: ignore[override]
                   stdin: bool = False) -> RunscProcess:
        # (Overrides crun's AdoptedProcess with another ProcessHandle.)
        if process.terminal:
            return await self._exec_terminal_runsc(container_id, process)
        stem = self._stem(container_id)
        process_file = self._scratch / f"{stem}.json"
        waiter_pid_file = self._scratch / f"{stem}.pid"
        pid_file = self._scratch / f"{stem}.ipid"
        log_path = self._scratch / f"{stem}.log"
        process_file.write_text(json.dumps(oci_process(process)))
        pipes = ProcessPipes(stdin=stdin)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._command(f"--debug-log={log_path}", "exec", "--detach",
                                   "--process", str(process_file),
                                   "--pid-file", str(waiter_pid_file),
                                   "--internal-pid-file", str(pid_file), container_id),
                    stdin=pipes.in_read, stdout=pipes.out_write, stderr=pipes.err_write,
                )
            finally:
                pipes.close_child_ends()
            if await proc.wait() != 0:
                message = pipes.read_stderr_now().decode(errors="replace").strip()
                log.info("runsc exec in %s failed: %s", container_id, message)
                raise CommandStartError(f"cannot start {process.args[0]!r}: "
                                        f"{start_failure(message)}",
                                        details={"runtime": self.name})
            pid, waiter = self._watch_waiter(pid_file, waiter_pid_file)
            stdin_writer, stdout, raw_stderr = await pipes.streams()
            stderr, relay = without_waiter_error(raw_stderr, pid)
        except BaseException:
            pipes.close_all()
            log_path.unlink(missing_ok=True)
            raise
        finally:
            for path in (process_file, waiter_pid_file, pid_file):
                path.unlink(missing_ok=True)
        return RunscProcess(self, container_id, pid, waiter, log_path,
                            stdin_writer, stdout, stderr, relay=relay)

    def _watch_waiter(self, pid_file: Path, waiter_pid_file: Path) -> tuple[int, AdoptedChild]:
        """The process's pid in the sandbox, and the watched waiter runsc left for it."""
        pid = int(pid_file.read_text())
        try:
            return pid, AdoptedChild(int(waiter_pid_file.read_text()))
        except ProcessLookupError:
            raise RuntimeFailure(f"{self.name} exec: the waiter exited and was reaped "
                                 "before the agent could watch it") from None

    async def _exec_terminal_runsc(self, container_id: str, process: ProcessSpec) -> RunscProcess:
        """``exec`` on a PTY: runsc makes a host PTY, gives its slave to the sandbox (the
        sentry serves it as the process's terminal) and sends the master to our socket."""
        stem = self._stem(container_id)
        process_file = self._scratch / f"{stem}.json"
        waiter_pid_file = self._scratch / f"{stem}.pid"
        pid_file = self._scratch / f"{stem}.ipid"
        log_path = self._scratch / f"{stem}.log"
        error_file = self._scratch / f"{stem}.err"
        process_file.write_text(json.dumps(oci_process(process)))
        console = ConsoleSocket(self._scratch, f"{os.getpid()}.{next(self._seq)}.sock")
        try:
            master = await start_on_terminal(
                self._command(f"--debug-log={log_path}", "exec", "--detach",
                              "--console-socket", str(console.path),
                              "--process", str(process_file),
                              "--pid-file", str(waiter_pid_file),
                              "--internal-pid-file", str(pid_file), container_id),
                console, error_file, process, self.name)
            try:
                pid, waiter = self._watch_waiter(pid_file, waiter_pid_file)
            except BaseException:
                os.close(master)
                raise
        except CommandStartError as exc:
            log.info("runsc exec on a terminal in %s failed: %s", container_id, exc.message)
            log_path.unlink(missing_ok=True)
            raise CommandStartError(f"cannot start {process.args[0]!r} on a terminal: "
                                    f"{start_failure(exc.message)}", details=exc.details) from None
        except BaseException:
            log_path.unlink(missing_ok=True)
            raise
        finally:
            console.close()
            for path in (process_file, waiter_pid_file, pid_file, error_file):
                path.unlink(missing_ok=True)
        return RunscProcess(self, container_id, pid, waiter, log_path, None,
                            ended_stream(), ended_stream(), console=master)

    async def signal_process(self, container_id: str, pid: int, signo: int) -> None:
        """Signal one process by its pid inside the sandbox; one that is gone is not an error."""
        rc, _, err = await self._call("kill", "--pid", str(pid), container_id, str(int(signo)))
        if rc != 0:
            log.debug("runsc kill --pid %s in %s: %s", pid, container_id,
                      err.decode(errors="replace").strip())

    async def process_parents(self, container_id: str) -> dict[int, int]:
        """Each process in the sandbox (its pid inside) with its parent's pid."""
        rc, out, err = await self._call("ps", container_id)
        if rc != 0:
            log.debug("runsc ps %s: %s", container_id, err.decode(errors="replace").strip())
            return {}
        return parse_ps(out)

    def deliver_later(self, delivery: Coroutine[Any, Any, None]) -> None:
        """Run a signal delivery in the background (``ProcessHandle.send_signal`` is sync)."""
        task = asyncio.ensure_future(delivery)
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def delete(self, container_id: str) -> None:
        if container_id not in self._cgroups:
            await self._learn(container_id)
        await super().delete(container_id)
        gofer = self._gofers.pop(container_id, None)
        if gofer is not None:
            try:
                await asyncio.wait_for(gofer.wait(), timeout=5)
            except TimeoutError:
                log.warning("gofer of %s not reaped after delete", container_id)
            gofer.close()
        cgroup = self._cgroups.pop(container_id, None)
        if cgroup:
            await asyncio.to_thread(cgroups.remove_sandbox, cgroup)

    async def _learn(self, container_id: str) -> None:
        """What delete needs of a sandbox started by an earlier agent: its gofer (ours to
        reap if this process started it) and its cgroup (which runsc may leave behind)."""
        rc, out, _ = await self._call("state", container_id)
        if rc != 0:
            return
        try:
            bundle = Path(json.loads(out)["bundle"])
            config = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._watch_gofer(container_id, bundle)
        self._cgroups[container_id] = config.get("linux", {}).get("cgroupsPath", "")

    async def close(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        for gofer in self._gofers.values():
            gofer.close()
        self._gofers.clear()
        await super().close()


async def probe_features(binary: str) -> list[str]:
    """The global flags for this runsc build (platform, and the isolation flags it knows)."""
    async def output(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            binary, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        out, _ = await proc.communicate()
        return out.decode(errors="replace")

    platforms, flags = await asyncio.gather(output("help", "platforms"), output("flags"))
    return global_flags(pick_platform(platforms), flags)

