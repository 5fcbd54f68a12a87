from __future__ import annotations

from pathlib import Path

import pytest

from qbox.agent import cgroups
from qbox.agent.idmap import IdMapping


def test_id_mapping() -> None:
    mapping = IdMapping()
    assert (mapping.base, mapping.size) == (100_000, 65_536)
    assert mapping.host_id(0) == 100_000 and mapping.host_id(1000) == 101_000
    assert mapping.root == (100_000, 100_000)
    assert mapping.oci() == [{"containerID": 0, "hostID": 100_000, "size": 65_536}]
    assert mapping.proc_map() == "0 100000 65536\n"
    with pytest.raises(ValueError):
        mapping.host_id(65_536)
    with pytest.raises(ValueError):
        IdMapping(0)


def test_oom_kills_from_cgroup_v1_and_v2(tmp_path: Path) -> None:
    assert cgroups.oom_kills("/qbox/sb_1", tmp_path) is None
    v1 = tmp_path / "memory" / "qbox" / "sb_1"
    v1.mkdir(parents=True)
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cgroups.oom_kills("/qbox/sb_1", tmp_path) == 3
    v2 = tmp_path / "qbox" / "sb_2"
    v2.mkdir(parents=True)
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert cgroups.oom_kills("/qbox/sb_2", tmp_path) == 1


def test_parse_counter() -> None:
    assert cgroups.parse_counter("a 1\noom_kill 7\n", "oom_kill") == 7
    assert cgroups.parse_counter("oom 2\n", "oom_kill") is None
    assert cgroups.parse_counter("oom_kill x\n", "oom_kill") is None


def test_swap_accounting(tmp_path: Path) -> None:
    assert cgroups.swap_accounted(tmp_path) is False
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("max")
    assert cgroups.swap_accounted(tmp_path) is True
    v2 = tmp_path / "v2"
    (v2 / "system.slice").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("memory pids")
    assert cgroups.swap_accounted(v2) is False
    (v2 / "system.slice" / "memory.swap.max").write_text("max")
    assert cgroups.swap_accounted(v2) is True
