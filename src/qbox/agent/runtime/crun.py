"""The crun driver, and runc through the same code: their command lines match.

Every call passes an absolute ``--root`` (crun misbehaves with a relative
one), under ``DATA_DIR/runtime`` so the runtime's own state survives agent
restarts. Commands and inits are started detached and adopted by the agent
(see ``child.py``), so no runtime process stays behind per command.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal as signals
import subprocess
import weakref
from pathlib import Path
from typing import Any

from qbox.agent import proctree
from qbox.agent.runtime.base import (
    CommandStartError,
    ContainerState,
    ContainerStatus,
    ExitStatus,
    ProcessSpec,
    RuntimeCapability,
    RuntimeFailure,
)
from qbox.agent.runtime.child import AdoptedChild, OrphanReaper, namespace_pid
from qbox.agent.runtime.pipes import ConsoleSocket, ProcessPipes, ended_stream, start_on_terminal
from qbox.agent.spec import oci_process

log = logging.getLogger("qbox.agent.runtime")

# A process the agent could not get a status for (it was not our child).
UNKNOWN_EXIT = ExitStatus(-1)


class AdoptedProcess:
    """A command started with ``exec --detach`` and adopted by the agent."""

    def __init__(self, child: AdoptedChild, pid: int, stdin: asyncio.StreamWriter | None,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader, *,
                 leader: proctree.ProcStat | None = None, namespace: str | None = None,
                 console: int | None = None) -> None:
        self._child = child
        self._pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.console = console
        # Where its tree is found (proctree.py): the leader as first seen, its
        # session, and the sandbox's PID namespace.
        self._leader = leader
        self.session: int | None = leader.session if leader is not None else None
        self._namespace = namespace

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def host_pid(self) -> int:
        return self._child.pid

    async def wait(self) -> ExitStatus:
        return await self._child.wait() or UNKNOWN_EXIT

    def send_signal(self, signo: int) -> None:
        self._child.send_signal(signo)

    async def signal_tree(self, signo: int) -> int:
        # The whole tree is found before anything is signalled: a shell that gets
        # SIGHUP passes it on to its jobs and exits, and a job's child that left the
        # session (setsid) would by then be an orphan that nothing leads to.
        # Once reaped, the leader's pid may be anyone's: only its session counts then.
        leader = None if self._child.exited else self._leader
        session, namespace = self.session, self._namespace

        def find() -> list[proctree.ProcStat]:
            return proctree.command_tree(proctree.scan(session), leader=leader,
                                         session=session, namespace=namespace)

        tree = await asyncio.to_thread(find)
        if not any(member.pid == self._child.pid for member in tree):
            self._child.send_signal(signo)  # the scan missed it: still the command itself
        return await asyncio.to_thread(proctree.signal_host, tree, signo)


class OciCliRuntime:
    """A RuntimeDriver over an OCI runtime's CLI (crun or runc)."""

    capabilities = RuntimeCapability.ISOLATES | RuntimeCapability.HOST_PTY

    def __init__(self, binary: str, root: Path, *, scratch_dir: Path | None = None,
                 name: str | None = None) -> None:
        self.name = name or Path(binary).name
        self._binary = binary
        self._root = root.absolute()
        # Process JSON and pid files of execs; kept out of --root, which the
        # runtime scans as its list of containers.
        self._scratch = (scratch_dir or self._root.parent / "exec").absolute()
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._inits: dict[str, AdoptedChild] = {}
        self._orphans = OrphanReaper()
        self._seq = itertools.count(1)
        # Commands by session id: a number handed out again (pids wrap) is
        # the newer command's session, no longer the older one's.
        self._sessions: weakref.WeakValueDictionary[int, AdoptedProcess] = (
            weakref.WeakValueDictionary())

    def _command(self, *args: str) -> list[str]:
        """The runtime's command line: its global flags, then ``args``."""
        return [self._binary, "--root", str(self._root), *args]

    async def _call(self, *args: str, stdout: int = subprocess.PIPE,
                    stderr: int = subprocess.PIPE) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *self._command(*args),
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out or b"", err or b""

    def _failure(self, what: str, detail: bytes | str) -> RuntimeFailure:
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        return RuntimeFailure(f"{self.name} {what} failed: {text.strip()[:2000]}",
                              details={"runtime": self.name})

    async def run(self, container_id: str, bundle: Path) -> ContainerState:
        pid_file = bundle / "init.pid"
        pid_file.unlink(missing_ok=True)
        # The init inherits crun's stdio and keeps it forever: a pipe there
        # would never reach EOF, so output is dropped and errors go to a file.
        log_path = bundle / "runtime.log"
        with open(log_path, "wb") as log_file:
            rc, _, _ = await self._call("run", "--detach", "--bundle", str(bundle),
                                        "--pid-file", str(pid_file), container_id,
                                        stdout=subprocess.DEVNULL, stderr=log_file.fileno())
        # crun's helper process outlives crun and becomes ours: reap it soon.
        self._orphans.poke()
        if rc != 0:
            raise self._failure("run", log_path.read_bytes())
        pid = int(pid_file.read_text())
        self._inits[container_id] = AdoptedChild(pid)
        return ContainerState(container_id, ContainerStatus.RUNNING, pid)

    def _stem(self, container_id: str) -> str:
        # The agent's pid in the name too: never shared with another agent process.
        return f"{container_id}.{os.getpid()}.{next(self._seq)}"

    async def exec(self, container_id: str, process: ProcessSpec, *,
                   stdin: bool = False) -> AdoptedProcess:
        if process.terminal:
            return await self._exec_terminal(container_id, process)
        stem = self._stem(container_id)
        process_file = self._scratch / f"{stem}.json"
        pid_file = self._scratch / f"{stem}.pid"
        process_file.write_text(json.dumps(oci_process(process)))
        pipes = ProcessPipes(stdin=stdin)
        try:
            try:
                # A session of its own (the command inherits it): how its tree
                # is found when it is killed (proctree.py).
                proc = await asyncio.create_subprocess_exec(
                    *self._command("exec", "--detach", "--process", str(process_file),
                                   "--pid-file", str(pid_file), container_id),
                    stdin=pipes.in_read, stdout=pipes.out_write, stderr=pipes.err_write,
                    start_new_session=True,
                )
            finally:
                pipes.close_child_ends()
            rc = await proc.wait()
            if rc != 0:
                # crun reports a start failure on its stderr, which is the
                # command's stderr pipe: nothing else has written to it.
                message = pipes.read_stderr_now().decode(errors="replace").strip()
                raise CommandStartError(f"cannot start {process.args[0]!r}: {message}",
                                        details={"runtime": self.name})
            child, pid, leader, namespace = self._adopt(container_id, pid_file)
            stdin_writer, stdout, stderr = await pipes.streams()
        except BaseException:
            pipes.close_all()
            raise
        finally:
            process_file.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)
        return self._register(AdoptedProcess(child, pid, stdin_writer, stdout, stderr,
                                             leader=leader, namespace=namespace))

    async def _exec_terminal(self, container_id: str, process: ProcessSpec) -> AdoptedProcess:
        """``exec`` on a PTY: the runtime makes it and sends its master end to our socket."""
        stem = self._stem(container_id)
        process_file = self._scratch / f"{stem}.json"
        pid_file = self._scratch / f"{stem}.pid"
        # The runtime's own errors; a file, not a pipe: nothing reads it unless it fails.
        error_file = self._scratch / f"{stem}.err"
        process_file.write_text(json.dumps(oci_process(process)))
        console = ConsoleSocket(self._scratch, f"{os.getpid()}.{next(self._seq)}.sock")
        try:
            master = await start_on_terminal(
                self._command("exec", "--detach", "--process", str(process_file),
                              "--console-socket", str(console.path),
                              "--pid-file", str(pid_file), container_id),
                console, error_file, process, self.name, new_session=True)
            try:
                child, pid, leader, namespace = self._adopt(container_id, pid_file)
            except BaseException:
                os.close(master)
                raise
        finally:
            console.close()
            for path in (process_file, pid_file, error_file):
                path.unlink(missing_ok=True)
        return self._register(AdoptedProcess(child, pid, None, ended_stream(), ended_stream(),
                                             leader=leader, namespace=namespace, console=master))

    def _adopt(self, container_id: str, pid_file: Path
               ) -> tuple[AdoptedChild, int, proctree.ProcStat | None, str | None]:
        """Watch the process the runtime started: its child, pid in the sandbox, leader, namespace."""
        host_pid = int(pid_file.read_text())
        try:
            child = AdoptedChild(host_pid)
        except ProcessLookupError:
            raise RuntimeFailure(f"{self.name} exec: the command exited and was reaped "
                                 "before the agent could watch it") from None
        try:
            pid = namespace_pid(host_pid)
        except (OSError, ValueError):
            child.close()
            raise
        # Before any await: until the event loop reaps it, the leader is
        # still there to read, however quickly it exited.
        leader = proctree.read_stat(host_pid)
        return child, pid, leader, self._namespace_of(container_id, host_pid)

    def _register(self, handle: AdoptedProcess) -> AdoptedProcess:
        """Remember the command by its session (a reused session id is the newer command's)."""
        if handle.session is not None:
            older = self._sessions.get(handle.session)
            if older is not None:
                older.session = None
            self._sessions[handle.session] = handle
        return handle

    def _namespace_of(self, container_id: str, host_pid: int) -> str | None:
        """The sandbox's PID namespace: the command's (gone if it already exited), or its init's."""
        namespace = proctree.pid_namespace(host_pid)
        init = self._inits.get(container_id)
        if namespace is None and init is not None:
            namespace = proctree.pid_namespace(init.pid)
        return namespace

    async def kill(self, container_id: str, signo: int = signals.SIGKILL) -> None:
        rc, _, err = await self._call("kill", container_id, str(int(signo)))
        if rc != 0 and await self.state(container_id) is not None:
            raise self._failure("kill", err)

    async def delete(self, container_id: str) -> None:
        rc, _, err = await self._call("delete", "--force", container_id)
        if rc != 0 and await self.state(container_id) is not None:
            raise self._failure("delete", err)
        init = self._inits.pop(container_id, None)
        if init is not None:
            # Killed with the container: let the event loop reap it now
            # rather than leave a zombie until the agent exits.
            try:
                await asyncio.wait_for(init.wait(), timeout=5)
            except TimeoutError:
                log.warning("init of %s not reaped after delete", container_id)
            init.close()

    async def state(self, container_id: str) -> ContainerState | None:
        rc, out, _ = await self._call("state", container_id)
        if rc != 0:
            return None
        return _parse_state(json.loads(out))

    async def list(self) -> list[ContainerState]:
        rc, out, err = await self._call("list", "--format", "json")
        if rc != 0:
            raise self._failure("list", err)
        entries = json.loads(out or b"null") or []  # runc prints null for none
        return [_parse_state(entry) for entry in entries]

    async def close(self) -> None:
        """Stop watching inits and sweeping orphans (agent shutdown; containers keep running)."""
        await self._orphans.stop()
        for init in self._inits.values():
            init.close()
        self._inits.clear()

    async def wait(self, container_id: str) -> ExitStatus | None:
        init = self._inits.get(container_id)
        if init is None:
            state = await self.state(container_id)
            if state is None or state.pid is None or state.status is ContainerStatus.STOPPED:
                return None
            try:
                init = AdoptedChild(state.pid)
            except ProcessLookupError:
                return None
            self._inits[container_id] = init
        return await init.wait()


def _parse_state(entry: dict[str, Any]) -> ContainerState:
    try:
        status = ContainerStatus(str(entry.get("status", "stopped")))
    except ValueError:
        status = ContainerStatus.STOPPED
    pid = entry.get("pid")
    alive = isinstance(pid, int) and pid > 0 and status is not ContainerStatus.STOPPED
    return ContainerState(str(entry["id"]), status, pid if alive else None)

