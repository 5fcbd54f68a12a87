"""A claim's cgroup setters on a fake cgroup tree (v1 hierarchies, v2 unified)."""

from __future__ import annotations

from pathlib import Path

from qbox.agent import cgroups

SANDBOX = "/qbox-t/sb_1"
MIB = 1024 * 1024


def v1_tree(root: Path, *, memsw: str | None) -> dict[str, Path]:
    memory = root / "memory" / SANDBOX.strip("/")
    cpu = root / "cpu,cpuacct" / SANDBOX.strip("/")
    for directory in (memory, cpu):
        directory.mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")  # as on a real host: one hierarchy, two names
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    (memory / "memory.limit_in_bytes").write_text(f"{512 * MIB}\n")
    if memsw is not None:
        (memory / "memory.memsw.limit_in_bytes").write_text(memsw)
    (cpu / "cpu.cfs_quota_us").write_text("200000\n")
    (cpu / "cpu.cfs_period_us").write_text("50000\n")
    return {"memory": memory, "cpu": cpu}


def test_v1_memory_follows_memsw_when_swap_was_limited(tmp_path: Path) -> None:
    tree = v1_tree(tmp_path, memsw=f"{512 * MIB}\n")
    written = cgroups.set_memory_limit(SANDBOX, 128, tmp_path)
    # Shrinking: memory first, then memory+swap (memsw may never be below memory).
    assert [p.name for p in written] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
        assert (tree["memory"] / name).read_text() == str(128 * MIB)
    grown = cgroups.set_memory_limit(SANDBOX, 256, tmp_path)
    assert [p.name for p in grown] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_v1_memsw_left_alone_when_swap_was_not_limited(tmp_path: Path) -> None:
    tree = v1_tree(tmp_path, memsw="9223372036854771712\n")
    assert [p.name for p in cgroups.set_memory_limit(SANDBOX, 64, tmp_path)] == [
        "memory.limit_in_bytes"]
    assert (tree["memory"] / "memory.memsw.limit_in_bytes").read_text().startswith("92233")


def test_v1_cpu_quota_keeps_the_period(tmp_path: Path) -> None:
    tree = v1_tree(tmp_path, memsw=None)
    written = cgroups.set_cpu_limit(SANDBOX, 1, tmp_path)
    assert len(written) == 1  # cpu, cpuacct and cpu,cpuacct are one directory
    assert (tree["cpu"] / "cpu.cfs_quota_us").read_text() == "50000"


def test_v2_memory_and_cpu(tmp_path: Path) -> None:
    directory = tmp_path / SANDBOX.strip("/")
    directory.mkdir(parents=True)
    (directory / "memory.max").write_text(f"{512 * MIB}\n")
    (directory / "memory.swap.max").write_text("0\n")
    (directory / "cpu.max").write_text("200000 100000\n")
    cgroups.set_memory_limit(SANDBOX, 100, tmp_path)
    cgroups.set_cpu_limit(SANDBOX, 1, tmp_path)
    assert (directory / "memory.max").read_text() == str(100 * MIB)
    assert (directory / "memory.swap.max").read_text() == "0\n"  # no swap stays no swap
    assert (directory / "cpu.max").read_text() == "100000 100000"


def test_no_cgroup_writes_nothing(tmp_path: Path) -> None:
    assert cgroups.set_memory_limit(SANDBOX, 64, tmp_path) == []
    assert cgroups.set_cpu_limit(SANDBOX, 1, tmp_path) == []

