"""The benchmark scripts: each answers --help, `make bench` runs every one, and their
generated sections of docs/benchmarks.md are rewritten without touching the text around."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from harness import latency_table  # noqa: E402
from raw_floor import RawFloor  # noqa: E402
from report import begin_marker, end_marker, machine_stamp, replace_section  # noqa: E402

SCRIPTS = sorted(path.name for path in BENCH.glob("bench_*.py"))


def bench_recipe() -> list[str]:
    """The lines of the Makefile's ``bench`` target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index("bench: setup")
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def sections_run_by_make() -> list[str]:
    """The section each line of the recipe writes: the script's name, and the part for
    bench_hosts.py (its writes and cluster parts are separate runs)."""
    sections = []
    for line in bench_recipe():
        found = re.fullmatch(r"\$\(call BENCH_RUN,bench/(bench_\w+\.py)(?:,(\w+))?\)", line)
        assert found, f"unexpected line in the bench target: {line}"
        script, part = found.groups()
        sections.append(f"{script} {part}" if part else script)
    return sections


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help(script: str) -> None:
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
    assert "--markdown" in done.stdout and "--quick" in done.stdout


def test_make_bench_runs_every_script() -> None:
    run = {section.split()[0] for section in sections_run_by_make()}
    assert sorted(run) == SCRIPTS


def test_make_bench_runs_both_parts_of_bench_hosts() -> None:
    assert {"bench_hosts.py writes", "bench_hosts.py cluster"} <= set(sections_run_by_make())


def test_the_doc_has_a_section_for_every_run_of_make_bench() -> None:
    document = (ROOT / "docs" / "benchmarks.md").read_text()
    for section in sections_run_by_make():
        begin, end = begin_marker(section), end_marker(section)
        assert document.count(begin) == 1, section
        assert document.count(end) == 1, section
        assert document.index(begin) < document.index(end), section


def test_a_section_is_rewritten_and_the_text_around_it_kept() -> None:
    document = (f"# Benchmarks\n\nBy hand, before.\n\n{begin_marker('bench_api.py')}\n\nold table\n\n"
                f"{end_marker('bench_api.py')}\n\nBy hand, after.\n")
    rewritten = replace_section(document, "bench_api.py", "new table\n")
    assert "old table" not in rewritten
    assert rewritten == document.replace("old table", "new table")
    assert replace_section(rewritten, "bench_api.py", "new table") == rewritten


def test_a_section_without_markers_is_appended_under_its_own_heading() -> None:
    document = "# Benchmarks\n\nBy hand.\n"
    rewritten = replace_section(document, "bench_new.py", "a table")
    assert rewritten.startswith(document)
    assert rewritten.endswith(f"## bench_new.py\n\n{begin_marker('bench_new.py')}\n\na table\n\n"
                              f"{end_marker('bench_new.py')}\n")


def test_a_begin_marker_without_its_end_is_refused() -> None:
    with pytest.raises(ValueError, match="bench_api.py"):
        replace_section(f"{begin_marker('bench_api.py')}\n\nold", "bench_api.py", "new")


def test_the_stamp_names_the_machine_and_the_commit() -> None:
    stamp = machine_stamp()
    assert re.search(r"\d+ cores, [\d.]+ GiB · Linux ", stamp)
    assert re.search(r"commit [0-9a-f]{7,}", stamp)


def test_latency_rows_are_set_against_the_raw_floor_of_the_same_run() -> None:
    floor = RawFloor(run_detach=[10.0, 10.0, 10.0], exec_true=[4.0, 4.0, 4.0])
    table = latency_table({"spawn": [30.0, 30.0], "exec": [8.0], "other": [1.0]}, "a test", floor,
                          against={"spawn": "run", "exec": "exec"})
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "3.0× (`crun run --detach`)" in rows["spawn"]
    assert "2.0× (`crun exec true`)" in rows["exec"]
    assert rows["other"].endswith("| – |")
    assert "| `crun run --detach` | 3 | 10.0 |" in table


def test_without_a_floor_the_table_says_why() -> None:
    table = latency_table({"spawn": [30.0]}, "a test", "not root")
    assert "not measured in this run (not root)" in table
    assert "raw crun p50" not in table
