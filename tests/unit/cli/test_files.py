"""``qbox sandboxes files``: each command against a scripted API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from qbox.cli import files as files_cli
from qbox.cli.exit_codes import ExitCode
from tests.unit.cli.conftest import Cli
from tests.unit.sdk.fakes import error, reply, sandbox
from tests.unit.sdk.test_files import RawBodyServer

SB = "/v1/sandboxes/sb_1"
DOWNLOAD = SB + "/download"
FILE = SB + "/file"
MIB = 1024 * 1024


@pytest.fixture
def cli() -> Cli:
    cli = Cli(server=RawBodyServer())
    cli.server.on("GET", SB, reply(200, sandbox("sb_1")))
    return cli


def requests_beyond_connect(cli: Cli) -> list[str]:
    return [t for t in cli.server.targets if t != f"GET {SB}"]


# --- cp ----------------------------------------------------------------------------------------


def test_cp_uploads_with_the_local_files_mode(cli: Cli, tmp_path: Path) -> None:
    local = tmp_path / "run.sh"
    local.write_bytes(b"#!/bin/sh\necho hi\n")
    local.chmod(0o750)
    cli.server.on("PUT", FILE, reply(204))
    result = cli("sb", "files", "cp", str(local), "sb_1:/srv/run.sh")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    put = cli.server.last("PUT", FILE)
    assert put.params == {"path": "/srv/run.sh", "mode": "750"}
    assert put.body == local.read_bytes()
    assert "content-type" not in put.headers


def test_cp_upload_into_a_directory_and_with_a_mode(cli: Cli, tmp_path: Path) -> None:
    local = tmp_path / "data.csv"
    local.write_text("a,b\n")
    cli.server.on("PUT", FILE, reply(204))
    assert cli("sb", "files", "cp", "--mode", "0o600", str(local), "sb_1:inbox/").exit_code == 0
    assert cli.server.last("PUT", FILE).params == {"path": "inbox/data.csv", "mode": "600"}


def test_cp_downloads_into_a_directory_or_to_a_path(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("GET", DOWNLOAD, httpx.Response(200, content=b"\x00\x01binary"))
    assert cli("sb", "files", "cp", "sb_1:/var/log/app.log", str(tmp_path)).exit_code == 0
    assert (tmp_path / "app.log").read_bytes() == b"\x00\x01binary"
    assert cli("sb", "files", "cp", "sb_1:/var/log/app.log", str(tmp_path / "copy")).exit_code == 0
    assert (tmp_path / "copy").read_bytes() == b"\x00\x01binary"
    assert cli.server.last("GET", DOWNLOAD).params == {"path": "/var/log/app.log"}


@pytest.mark.parametrize("args", [("a", "b"), ("sb_1:/a", "sb_2:/b"), ("sb_1:", "x")])
def test_cp_needs_exactly_one_sandbox_path(cli: Cli, args: tuple[str, str]) -> None:
    result = cli("sb", "files", "cp", *args)
    assert result.exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_cp_of_a_missing_local_file_is_a_clean_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("sb", "files", "cp", str(tmp_path / "nope"), "sb_1:/x")
    assert result.exit_code == 1
    assert "nope" in result.stderr and "Traceback" not in result.stderr
    assert cli.server.seen == []


def test_cp_refuses_a_local_directory(cli: Cli, tmp_path: Path) -> None:
    result = cli("sb", "files", "cp", str(tmp_path), "sb_1:/x")
    assert result.exit_code == ExitCode.USAGE
    assert "directory" in result.stderr


def test_cp_download_errors_map_to_exit_codes_and_leave_nothing(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("GET", DOWNLOAD, error(404, "not_found", "no such file: /nope"))
    result = cli("sb", "files", "cp", "sb_1:/nope", str(tmp_path / "out"), tty=True)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stderr.startswith("error: not_found: no such file: /nope")
    assert list(tmp_path.iterdir()) == []


def test_cp_to_a_sandbox_that_is_not_running(cli: Cli, tmp_path: Path) -> None:
    cli.server.routes.clear()
    cli.server.on("GET", SB, reply(200, sandbox("sb_1", status="paused")))
    local = tmp_path / "f"
    local.write_text("x")
    assert cli("sb", "files", "cp", str(local), "sb_1:/f").exit_code == ExitCode.CONFLICT


@pytest.mark.parametrize(("size", "tty", "shown"), [(MIB, True, True), (MIB - 1, True, False), (MIB, False, False)])
def test_cp_shows_progress_for_big_files_on_a_terminal(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, tty: bool, shown: bool
) -> None:
    monkeypatch.setattr(files_cli, "_stderr_is_tty", lambda: tty)
    local = tmp_path / "big.bin"
    local.write_bytes(b"b" * size)
    cli.server.on("PUT", FILE, reply(204))
    cli.server.on("GET", DOWNLOAD, lambda _r: httpx.Response(200, content=b"d" * size))
    up = cli("sb", "files", "cp", str(local), "sb_1:/big.bin")
    down = cli("sb", "files", "cp", "sb_1:/big.bin", str(tmp_path / "back.bin"))
    assert (up.exit_code, down.exit_code) == (0, 0)
    assert ("big.bin -> sb_1" in up.stderr) is shown
    assert ("sb_1 -> back.bin" in down.stderr) is shown
    assert up.stdout == down.stdout == ""
    assert (tmp_path / "back.bin").stat().st_size == size


def test_cp_resolves_a_sandbox_name_on_either_side(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1", labels={"name": "web"}), sandbox("sb_2")]))
    cli.server.on("PUT", FILE, reply(204))
    cli.server.on("GET", DOWNLOAD, httpx.Response(200, content=b"log"))
    local = tmp_path / "in.txt"
    local.write_text("hi")
    up = cli("sb", "files", "cp", str(local), "web:/srv/in.txt")
    down = cli("sb", "files", "cp", "web:/var/log/app.log", str(tmp_path / "app.log"))
    assert (up.exit_code, up.stderr, down.exit_code, down.stderr) == (0, "", 0, "")
    assert cli.server.last("PUT", FILE).params == {"path": "/srv/in.txt", "mode": "644"}
    assert (tmp_path / "app.log").read_bytes() == b"log"


def test_cp_to_an_unknown_name_exits_4_before_reading_anything(cli: Cli, tmp_path: Path) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1")]))
    local = tmp_path / "in.txt"
    local.write_text("hi")
    result = cli("sb", "files", "cp", str(local), "web:/srv/in.txt", tty=True)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "no sandbox named 'web'" in result.stderr
    assert cli.server.targets == ["GET /v1/sandboxes"]


def test_a_colon_after_a_slash_is_part_of_a_local_path(cli: Cli, tmp_path: Path) -> None:
    local = tmp_path / "notes:v2.txt"
    local.write_text("x")
    cli.server.on("PUT", FILE, reply(204))
    assert cli("sb", "files", "cp", str(local), "sb_1:/srv/").exit_code == 0
    assert cli.server.last("PUT", FILE).params["path"] == "/srv/notes:v2.txt"


# --- ls, cat, write, stat, mkdir, rm -----------------------------------------------------------

ENTRIES = [
    {"name": "src", "isDir": True, "size": 4096, "mode": "drwxr-xr-x", "mtime": "2025-01-02T03:04:05.000000Z"},
    {"name": "a.txt", "isDir": False, "size": 3, "mode": "-rw-r--r--", "mtime": "2025-01-02T03:04:05.000000Z"},
]


def test_ls_table_and_json(cli: Cli) -> None:
    cli.server.on("GET", SB + "/files", reply(200, ENTRIES))
    table = cli("sb", "files", "ls", "sb_1:/w", tty=True)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["MODE", "SIZE", "MODIFIED", "NAME"]
    assert lines[1].split() == ["drwxr-xr-x", "4096", "2025-01-02", "03:04:05", "src/"]
    assert lines[2].split()[-1] == "a.txt"
    data = json.loads(cli("sb", "files", "ls", "sb_1:/w", "--json", tty=True).stdout)
    assert [d["path"] for d in data] == ["/w/src", "/w/a.txt"]
    assert data[0]["isDir"] is True
    assert cli.server.last("GET", SB + "/files").params == {"path": "/w"}


def test_ls_recursive_lists_each_directory_and_shows_paths(cli: Cli) -> None:
    listings = {"/w": ENTRIES, "/w/src": [{"name": "main.py", "isDir": False, "size": 1}]}
    cli.server.on("GET", SB + "/files", lambda request: reply(200, listings[request.url.params["path"]]))
    result = cli("sb", "files", "ls", "-r", "sb_1:/w", tty=True)
    lines = result.stdout.splitlines()
    assert lines[0].split()[-1] == "PATH"
    assert [line.split()[-1] for line in lines[1:]] == ["/w/src", "/w/src/main.py", "/w/a.txt"]
    assert requests_beyond_connect(cli) == [f"GET {SB}/files"] * 2


def test_ls_by_name(cli: Cli) -> None:
    cli.server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1", labels={"name": "web"})]))
    cli.server.on("GET", SB + "/files", reply(200, ENTRIES))
    assert cli("sb", "files", "ls", "web:/w").exit_code == 0
    assert cli.server.last("GET", SB + "/files").params == {"path": "/w"}


def test_ls_needs_a_sandbox_path(cli: Cli) -> None:
    result = cli("sb", "files", "ls", "/w")
    assert result.exit_code == ExitCode.USAGE
    assert "sb_ID:/path" in result.stderr


def test_cat_writes_raw_bytes(cli: Cli) -> None:
    body = b"\xff\xfe not utf-8 \x00"
    cli.server.on("GET", DOWNLOAD, lambda _r: httpx.Response(200, content=iter([body[:4], body[4:]])))
    result = cli("sb", "files", "cat", "sb_1:/bin/blob")
    assert (result.exit_code, result.stdout_bytes) == (0, body)


def test_cat_missing_file_exits_4(cli: Cli) -> None:
    cli.server.on("GET", DOWNLOAD, error(404, "not_found", "no such file"))
    result = cli("sb", "files", "cat", "sb_1:/nope", tty=True)
    assert (result.exit_code, result.stdout_bytes) == (ExitCode.NOT_FOUND, b"")
    assert result.stderr.startswith("error: not_found: no such file")


def test_write_sends_stdin(cli: Cli) -> None:
    cli.server.on("PUT", FILE, reply(204))
    assert cli("sb", "files", "write", "sb_1:/etc/motd", input="héllo\n").exit_code == 0
    put = cli.server.last("PUT", FILE)
    assert (put.params, put.body) == ({"path": "/etc/motd", "mode": "644"}, "héllo\n".encode())
    assert cli("sb", "files", "write", "-a", "--mode", "600", "sb_1:log", input="more").exit_code == 0
    put = cli.server.last("PUT", FILE)
    assert (put.params, put.body) == ({"path": "log", "mode": "600", "append": "true"}, b"more")


def test_write_rejects_a_bad_mode(cli: Cli) -> None:
    assert cli("sb", "files", "write", "--mode", "999", "sb_1:/f", input="x").exit_code == ExitCode.USAGE
    assert cli.server.seen == []


def test_write_errors_map_to_exit_codes(cli: Cli) -> None:
    cli.server.on("PUT", FILE, error(507, "insufficient_storage", "disk full"))
    result = cli("sb", "files", "write", "sb_1:/f", input="x")
    assert result.exit_code == ExitCode.QUOTA
    assert json.loads(result.stdout)["error"]["message"] == "disk full"  # not a terminal: JSON


def test_stat_prose_json_and_missing(cli: Cli) -> None:
    found = {
        "path": "/etc/alt",
        "exists": True,
        "size": 9,
        "mode": "Lrwxrwxrwx",
        "isDir": False,
        "isSymlink": True,
        "symlinkTarget": "/etc/real",
        "modifiedAt": "2025-01-02T03:04:05.000000Z",
    }
    cli.server.on("GET", SB + "/stat", reply(200, found), reply(200, found), reply(200, {"exists": False}))
    prose = cli("sb", "files", "stat", "sb_1:/etc/alt", tty=True).stdout
    assert "Type      symlink" in prose and "Target    /etc/real" in prose
    assert json.loads(cli("sb", "files", "stat", "sb_1:/etc/alt", "--json").stdout) == found
    missing = cli("sb", "files", "stat", "sb_1:/nope", tty=True)
    assert missing.exit_code == ExitCode.NOT_FOUND
    assert "sb_1:/nope: no such file or directory" in missing.stderr


def test_mkdir_and_rm(cli: Cli) -> None:
    cli.server.on("POST", SB + "/files/mkdir", reply(204))
    cli.server.on("DELETE", FILE, reply(204))
    assert cli("sb", "files", "mkdir", "sb_1:/srv/app").exit_code == 0
    assert cli("sb", "files", "mkdir", "--mode", "700", "--no-parents", "sb_1:/srv/key").exit_code == 0
    assert cli("sb", "files", "rm", "sb_1:/tmp/f").exit_code == 0
    assert cli("sb", "files", "rm", "-r", "sb_1:/tmp/d").exit_code == 0
    assert [s.body for s in cli.server.seen if s.method == "POST"] == [
        {"path": "/srv/app", "mode": 493, "parents": True},
        {"path": "/srv/key", "mode": 448, "parents": False},
    ]
    assert [s.params for s in cli.server.seen if s.method == "DELETE"] == [
        {"path": "/tmp/f"},
        {"path": "/tmp/d", "recursive": "true"},
    ]


def test_rm_conflict_exits_6(cli: Cli) -> None:
    cli.server.on("DELETE", FILE, error(409, "conflict", "directory not empty"))
    result = cli("sb", "files", "rm", "sb_1:/d", tty=True)
    assert result.exit_code == ExitCode.CONFLICT
    assert "directory not empty" in result.stderr
