"""The raw runtime's floor, measured in the same run as the figures it is set against.

A minimal bundle — a static busybox as the whole root filesystem, `crun
spec`'s default config (pid, network, ipc, uts and mount namespaces, no user
namespace, no cgroup limits, no network set up, no disk) running `sleep` —
is what crun costs with nothing of qbox's around it:

- `crun run --detach` of a new container until crun returns (the container's
  process runs), one at a time, each deleted (untimed) before the next;
- `crun exec <id> true` in one such container, until crun returns.

Both are timed from Python as a subprocess, as the agent starts crun.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")


@dataclass(frozen=True)
class RawFloor:
    run_detach: list[float]
    exec_true: list[float]


def _make_bundle(bundle: Path, crun: str) -> None:
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "true", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run([crun, "spec"], cwd=bundle, check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sleep", "3600"]
    (bundle / "config.json").write_text(json.dumps(config))


def _timed(command: list[str]) -> float:
    # No pipes: the container's process inherits crun's stdio and would hold a pipe open.
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        elapsed = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)}: {errors.read().decode(errors='replace').strip()}")
    return elapsed


def why_not_measurable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("crun") is None:
        return "crun is not installed"
    if not BUSYBOX.exists():
        return f"no static busybox at {BUSYBOX}"
    return None


def measure(runs: int = 20, execs: int = 50, warmup: int = 3) -> RawFloor:
    """``runs`` detached runs and ``execs`` execs of ``true`` (after ``warmup`` of each)."""
    crun = shutil.which("crun") or "crun"
    scratch = Path(tempfile.mkdtemp(prefix="qbox-raw-floor-"))
    state = [crun, "--root", str(scratch / "state")]
    bundle = scratch / "bundle"
    names = (f"qbox-raw-floor-{os.getpid()}-{n}" for n in range(1 << 30))
    try:
        _make_bundle(bundle, crun)
        run_detach = []
        for n in range(warmup + runs):
            name = next(names)
            elapsed = _timed([*state, "run", "--detach", "--bundle", str(bundle), name])
            subprocess.run([*state, "delete", "--force", name], check=True, capture_output=True)
            if n >= warmup:
                run_detach.append(elapsed)
        name = next(names)
        _timed([*state, "run", "--detach", "--bundle", str(bundle), name])
        exec_true = [_timed([*state, "exec", name, "true"]) for _ in range(warmup + execs)][warmup:]
        return RawFloor(run_detach, exec_true)
    finally:
        listing = subprocess.run([*state, "list", "--quiet"], capture_output=True, text=True)
        for leftover in listing.stdout.split():
            subprocess.run([*state, "delete", "--force", leftover], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
