"""A sandbox's cgroup goes even while something in it forks as fast as it can.

``cgroups.remove_sandbox`` is the net under the runtime's own delete: on
cgroup v1 a fork bomb can refill a cgroup between crun reading its members
and killing them, which once left a bombed sandbox's cgroup behind (CI, stop
21). Here a real forking process tree is put in a real cgroup in every
hierarchy, and removal must end it and leave no directory.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox.agent import cgroups

pytestmark = pytest.mark.integration

ROOT = Path("/sys/fs/cgroup")
# Forks without pause, each child forking again, to a bounded depth: the tree
# keeps replacing what dies, as a bomb does, but stays small enough for a CI host.
FORKER = """
import os, sys, time
open(sys.argv[1], "w").close()
while True:
    try:
        if os.fork() == 0:
            time.sleep(0.01)
            os._exit(0)
    except OSError:
        time.sleep(0.001)
"""


def _hierarchies(relative: str) -> list[Path]:
    return [base / relative for base in (ROOT, *ROOT.iterdir()) if (base / relative).is_dir()]


@pytest.fixture
def cgroup() -> Iterator[str]:
    parent = f"qbox-test-{secrets.token_hex(3)}"
    relative = f"{parent}/sb_removal"
    made = []
    for base in (ROOT / "pids", ROOT / "freezer", ROOT / "memory", ROOT / "unified"):
        if base.is_dir():
            (base / relative).mkdir(parents=True)
            made.append(base / relative)
    if not made:
        pytest.fail("no cgroup hierarchy to test in")
    try:
        yield relative
    finally:
        cgroups.remove_sandbox(relative, timeout=5)
        for base in (ROOT, *ROOT.iterdir()):
            for path in (base / relative, base / parent):
                if path.is_dir():
                    path.rmdir()


def test_a_forking_tree_is_killed_and_its_cgroup_removed(cgroup: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    forker = subprocess.Popen([sys.executable, "-c", FORKER, str(ready)])
    try:
        for directory in _hierarchies(cgroup):
            (directory / "cgroup.procs").write_text(str(forker.pid))
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        members = (_hierarchies(cgroup)[0] / "cgroup.procs").read_text().split()
        assert str(forker.pid) in members

        assert cgroups.remove_sandbox(cgroup) is True

        assert _hierarchies(cgroup) == []
        assert forker.wait(timeout=10) == -9
    finally:
        if forker.poll() is None:
            os.kill(forker.pid, 9)
            forker.wait()


def test_removing_a_cgroup_that_is_not_there_is_done(cgroup: str) -> None:
    assert cgroups.remove_sandbox(cgroup.replace("sb_removal", "sb_never")) is True
    assert _hierarchies(cgroup)  # another sandbox's cgroup is left alone
