"""A stand-in for the runsc binary, for driver tests without root: records every call and
acts out what the driver relies on.

- ``run --detach --pid-file P ID``: a ``sleep`` plays the sandbox process.
- ``exec --detach --process F --pid-file W --internal-pid-file I ID``: forks a
  waiter that runs the command on the host (its pid doubles as the "in-sandbox"
  pid), then logs ``Exiting with status: <wait status>`` to ``--debug-log`` the way
  runsc does, and exits with the status folded into 128+N. With
  ``$FAKE_RUNSC_SANDBOX_DIES`` it fails instead, as runsc's waiter does when
  the sandbox dies under it (its error on stderr and in the log, exit 128).
- ``kill --pid N ID SIG``: signals N. ``state``/``list``/``delete`` from a small
  JSON file per container.
Every call is appended (argv as JSON) to ``$FAKE_RUNSC_CALLS``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _option(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main() -> int:
    argv = sys.argv[1:]
    with open(os.environ["FAKE_RUNSC_CALLS"], "a") as calls:
        calls.write(json.dumps(argv) + "\n")
    if argv[:2] == ["help", "platforms"]:
        print("ptrace\nkvm\nsystrap")
        return 0
    if argv[:1] == ["flags"]:
        print("  -directfs\n    \tdirect fs\n  -overlay2 value\n    \toverlay\n"
              "  -file-access value\n    \tshared\n  -platform string\n    \tplatform")
        return 0
    root = Path(_option(argv, "--root") or ".")
    commands = ("run", "exec", "kill", "delete", "state", "list")
    at = next(i for i, arg in enumerate(argv) if arg in commands)
    command, rest = argv[at], argv[at + 1:]
    if command == "run":
        container = rest[-1]
        sandbox = subprocess.Popen(["sleep", "600"], start_new_session=True)
        Path(_option(rest, "--pid-file") or "/dev/null").write_text(str(sandbox.pid))
        (root / f"{container}.json").write_text(json.dumps(
            {"id": container, "status": "running", "pid": sandbox.pid}))
        return 0
    if command == "exec":
        process = json.loads(Path(_option(rest, "--process") or "").read_text())
        report_read, report_write = os.pipe()
        waiter = os.fork()
        if waiter == 0:
            os.close(report_read)
            try:
                child = subprocess.Popen(process["args"], cwd=process["cwd"],
                                         env=dict(e.split("=", 1) for e in process["env"]))
            except OSError as exc:
                os.write(report_write, f"E{exc}".encode())
                os._exit(128)
            os.write(report_write, str(child.pid).encode())
            os.close(report_write)
            _, status = os.waitpid(child.pid, 0)
            if os.environ.get("FAKE_RUNSC_SANDBOX_DIES"):  # as when the sentry is killed
                error = (f"waiting on pid {child.pid}: urpc method "
                         f'"containerManager.WaitPID" failed: EOF')
                with open(_option(argv[:at], "--debug-log") or "/dev/null", "a") as log:
                    log.write(f"W1127 15:00:00.000000 {os.getpid():8d} util.go:64] "
                              f"FATAL ERROR: {error}\n")
                print(error, file=sys.stderr, flush=True)
                os._exit(128)
            with open(_option(argv[:at], "--debug-log") or "/dev/null", "a") as log:
                log.write(f"I1127 15:00:00.000000 {os.getpid():8d} main.go:222] "
                          f"Exiting with status: {status}\n")
            code = (128 + os.WTERMSIG(status) if os.WIFSIGNALED(status)
                    else os.WEXITSTATUS(status))
            os._exit(code)
        os.close(report_write)
        report = os.read(report_read, 4096).decode()
        if report.startswith("E"):
            print(f"executing processes for container: {report[1:]}", file=sys.stderr)
            return 128
        Path(_option(rest, "--internal-pid-file") or "").write_text(report)
        Path(_option(rest, "--pid-file") or "").write_text(str(waiter))
        return 0
    if command == "kill":
        pid = _option(rest, "--pid")
        if pid is not None:
            os.kill(int(pid), int(rest[-1]))
        return 0
    state_file = root / f"{rest[-1]}.json"
    if command == "state":
        if not state_file.exists():
            print("loading container: file does not exist", file=sys.stderr)
            return 128
        print(state_file.read_text())
        return 0
    if command == "list":
        print(json.dumps([json.loads(p.read_text()) for p in root.glob("*.json")]))
        return 0
    if command == "delete" and state_file.exists():
        os.kill(json.loads(state_file.read_text())["pid"], signal.SIGKILL)
        state_file.unlink()
        time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
