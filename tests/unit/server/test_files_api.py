"""The files API through the control plane (the real agent: its fake runtime's sandboxes are directories)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox.agent.files_api import CHUNK_BYTES as AGENT_CHUNK_BYTES
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn


@pytest.fixture
def sb(harness: Harness) -> str:
    return str(spawn(harness)["id"])


def put(h: Harness, sb: str, path: str, data: bytes = b"", **params: str) -> int:
    r = h.client.put(f"/v1/sandboxes/{sb}/file", params={"path": path, "mode": "644", **params},
                     content=data, headers=h.auth())
    assert r.status_code in (204, 400, 403, 404, 409, 413, 507), r.text
    return r.status_code


def root_of(h: Harness, sb: str) -> Path:
    return h.agent.rootfs(sb)


def error(r: object) -> str:
    return r.json()["error"]["code"]  # type: ignore[attr-defined,no-any-return]


def test_write_then_download_and_file_return_the_bytes(harness: Harness, sb: str) -> None:
    data = bytes(range(256)) * 1000
    assert put(harness, sb, "/home/user/data.bin", data, mode="600") == 204
    for route in ("download", "file"):
        r = harness.client.get(f"/v1/sandboxes/{sb}/{route}", params={"path": "/home/user/data.bin"},
                               headers=harness.auth())
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-length"] == str(len(data))
    on_disk = root_of(harness, sb) / "home/user/data.bin"
    assert on_disk.stat().st_mode & 0o777 == 0o600


def test_relative_paths_are_relative_to_the_home(harness: Harness, sb: str) -> None:
    assert put(harness, sb, "notes/a.txt", b"hi") == 204
    assert (root_of(harness, sb) / "home/user/notes/a.txt").read_bytes() == b"hi"
    r = harness.client.get(f"/v1/sandboxes/{sb}/stat", params={"path": "notes/a.txt"},
                           headers=harness.auth())
    assert r.json()["path"] == "/home/user/notes/a.txt"


def test_empty_body_without_content_type_writes_an_empty_file(harness: Harness, sb: str) -> None:
    r = harness.client.put(f"/v1/sandboxes/{sb}/file?path=/tmp/empty&mode=644", headers=harness.auth())
    assert r.status_code == 204
    assert (root_of(harness, sb) / "tmp/empty").read_bytes() == b""


def test_create_parents_false_needs_the_parent(harness: Harness, sb: str) -> None:
    assert put(harness, sb, "/a/b/c.txt", b"x", createParents="false") == 404
    assert not (root_of(harness, sb) / "a").exists()
    assert put(harness, sb, "/a/b/c.txt", b"x") == 204


def test_append_extension_adds_and_keeps_the_mode(harness: Harness, sb: str) -> None:
    assert put(harness, sb, "/tmp/log", b"one\n", mode="600") == 204
    assert put(harness, sb, "/tmp/log", b"two\n", append="true") == 204
    path = root_of(harness, sb) / "tmp/log"
    assert path.read_bytes() == b"one\ntwo\n" and path.stat().st_mode & 0o777 == 0o600


def test_upload_streams_in_chunks(harness: Harness, sb: str) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(64):
            yield b"z" * 65536

    r = harness.client.put(f"/v1/sandboxes/{sb}/file?path=/big&mode=644", content=body(),
                           headers=harness.auth())
    assert r.status_code == 204
    assert (root_of(harness, sb) / "big").stat().st_size == 64 * 65536
    assert harness.agent.requests("PUT", f"/sandboxes/{sb}/files/content")[-1].chunks > 1


def test_download_streams(harness: Harness, sb: str) -> None:
    size = 3 * AGENT_CHUNK_BYTES  # the agent reads a file a chunk at a time
    (root_of(harness, sb) / "big").write_bytes(b"q" * size)
    with harness.client.stream("GET", f"/v1/sandboxes/{sb}/download?path=/big",
                               headers=harness.auth()) as r:
        chunks = list(r.iter_raw())
    assert sum(map(len, chunks)) == size and len(chunks) > 1


def test_stat_of_a_missing_path_is_200_with_exists_false(harness: Harness, sb: str) -> None:
    r = harness.client.get(f"/v1/sandboxes/{sb}/stat?path=/nope", headers=harness.auth())
    assert r.status_code == 200
    body = r.json()
    assert body["exists"] is False and body["path"] == "/nope"
    put(harness, sb, "/tmp/f", b"12345")
    body = harness.client.get(f"/v1/sandboxes/{sb}/stat?path=/tmp/f", headers=harness.auth()).json()
    assert set(body) == {"path", "exists", "size", "mode", "isDir", "isSymlink", "symlinkTarget",
                         "modifiedAt"}
    assert body["exists"] and body["size"] == 5 and body["mode"] == "-rw-r--r--"
    assert body["modifiedAt"].endswith("Z") and body["isSymlink"] is False


def test_list_is_a_bare_array_without_dots(harness: Harness, sb: str) -> None:
    put(harness, sb, "/work/a.txt", b"a")
    harness.client.post(f"/v1/sandboxes/{sb}/files/mkdir", json={"path": "/work/sub", "mode": 448,
                                                                "parents": True},
                        headers=harness.auth())
    (root_of(harness, sb) / "work/link").symlink_to("/work/sub")
    r = harness.client.get(f"/v1/sandboxes/{sb}/files?path=/work", headers=harness.auth())
    assert r.status_code == 200
    listing = {e["name"]: e for e in r.json()}
    assert set(listing) == {"a.txt", "sub", "link"}
    assert listing["sub"]["isDir"] is True and listing["sub"]["mode"] == "drwx------"
    assert listing["link"]["isDir"] is False
    assert set(listing["a.txt"]) == {"name", "isDir", "size", "mode", "mtime"}


def test_mkdir_rename_and_remove(harness: Harness, sb: str) -> None:
    c, auth = harness.client, harness.auth()
    r = c.post(f"/v1/sandboxes/{sb}/files/mkdir", json={"path": "/d", "mode": 493, "parents": False},
               headers=auth)
    assert r.status_code == 204
    r = c.post(f"/v1/sandboxes/{sb}/files/mkdir", json={"path": "/d", "mode": 493, "parents": False},
               headers=auth)
    assert r.status_code == 409 and error(r) == "conflict"
    put(harness, sb, "/d/f", b"1")
    r = c.post(f"/v1/sandboxes/{sb}/files/rename", json={"src": "/d/f", "dst": "/d/g"}, headers=auth)
    assert r.status_code == 204 and (root_of(harness, sb) / "d/g").exists()
    r = c.delete(f"/v1/sandboxes/{sb}/file?path=/d", headers=auth)
    assert r.status_code == 409 and error(r) == "conflict"
    r = c.delete(f"/v1/sandboxes/{sb}/file?path=/d&recursive=true", headers=auth)
    assert r.status_code == 204 and not (root_of(harness, sb) / "d").exists()
    r = c.delete(f"/v1/sandboxes/{sb}/file?path=/d", headers=auth)
    assert r.status_code == 404 and error(r) == "not_found"


def test_errors_in_the_error_shape(harness: Harness, sb: str) -> None:
    c, auth = harness.client, harness.auth()
    put(harness, sb, "/tmp/f", b"1")
    cases = [
        (c.get(f"/v1/sandboxes/{sb}/download?path=/missing", headers=auth), 404, "not_found"),
        (c.get(f"/v1/sandboxes/{sb}/download?path=/tmp", headers=auth), 409, "conflict"),
        (c.get(f"/v1/sandboxes/{sb}/files?path=/tmp/f", headers=auth), 409, "conflict"),
        (c.get(f"/v1/sandboxes/{sb}/download", headers=auth), 400, "validation_error"),
        (c.get(f"/v1/sandboxes/{sb}/stat?path=/a%00b", headers=auth), 400, "validation_error"),
        (c.put(f"/v1/sandboxes/{sb}/file?path=/x&mode=999", headers=auth), 400, "validation_error"),
        (c.put(f"/v1/sandboxes/{sb}/file?path=/tmp&mode=644", headers=auth), 409, "conflict"),
        (c.post(f"/v1/sandboxes/{sb}/files/mkdir", json={"path": "/x", "mode": -1}, headers=auth),
         400, "validation_error"),
        (c.post(f"/v1/sandboxes/{sb}/files/rename", json={"src": "/nope", "dst": "/x"}, headers=auth),
         404, "not_found"),
        (c.post(f"/v1/sandboxes/{sb}/files/rename", json={"src": "/a\u0000", "dst": "/x"},
                headers=auth), 400, "validation_error"),
    ]
    for r, status, code in cases:
        assert (r.status_code, error(r)) == (status, code), r.request.url
        assert r.json()["error"]["message"]


def test_over_the_size_cap_is_413(tmp_path: Path, database: str | None) -> None:
    for h in make_harness(tmp_path, database=database, max_file_bytes=1000):
        sb = str(spawn(h)["id"])
        assert put(h, sb, "/tmp/ok", b"x" * 1000) == 204
        r = h.client.put(f"/v1/sandboxes/{sb}/file?path=/tmp/big&mode=644", content=b"x" * 1001,
                         headers=h.auth())
        assert r.status_code == 413 and error(r) == "payload_too_large"
        assert r.json()["error"]["details"]["maxBytes"] == 1000

        def unannounced() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
            yield b"x" * 600
            yield b"x" * 600

        r = h.client.put(f"/v1/sandboxes/{sb}/file?path=/tmp/big&mode=644", content=unannounced(),
                         headers=h.auth())
        assert r.status_code == 413
        assert not (h.agent.rootfs(sb) / "tmp/big").exists()
        assert [p.name for p in (h.agent.rootfs(sb) / "tmp").iterdir()] == ["ok"]


def test_ended_sandbox_is_not_active(harness: Harness, sb: str) -> None:
    harness.client.delete(f"/v1/sandboxes/{sb}", headers=harness.auth())
    r = harness.client.get(f"/v1/sandboxes/{sb}/stat?path=/", headers=harness.auth())
    assert r.status_code == 409 and error(r) == "sandbox_not_active"


def test_another_member_sees_nothing_and_read_scope_cannot_write(harness: Harness, sb: str) -> None:
    _bob_id, bob = add_user_with_key(harness.settings.data_dir)
    r = harness.client.get(f"/v1/sandboxes/{sb}/stat?path=/", headers=harness.auth(bob))
    assert r.status_code == 404
    _r, reader = add_user_with_key(harness.settings.data_dir, role="admin", scopes=["files:read"])
    r = harness.client.put(f"/v1/sandboxes/{sb}/file?path=/x&mode=644", content=b"x",
                           headers=harness.auth(reader))
    assert r.status_code == 403 and r.json()["error"]["details"]["requiredScope"] == "files:write"
    r = harness.client.get(f"/v1/sandboxes/{sb}/stat?path=/", headers=harness.auth(reader))
    assert r.status_code == 200


def test_changes_are_audited_with_their_paths(harness: Harness, sb: str) -> None:
    c, auth = harness.client, harness.auth()
    put(harness, sb, "/tmp/a", b"secret contents")
    c.post(f"/v1/sandboxes/{sb}/files/mkdir", json={"path": "/tmp/d", "mode": 493, "parents": True},
           headers=auth)
    c.post(f"/v1/sandboxes/{sb}/files/rename", json={"src": "/tmp/a", "dst": "/tmp/b"}, headers=auth)
    c.delete(f"/v1/sandboxes/{sb}/file?path=/tmp/b", headers=auth)
    c.get(f"/v1/sandboxes/{sb}/download?path=/tmp/d", headers=auth)  # reads are not audited
    got = [(e["action"], e["targetId"], e["detail"]) for e in entries(harness)
           if e["action"].startswith("file.")]
    assert sorted(got) == sorted([("file.write", sb, "write /tmp/a"), ("file.mkdir", sb, "/tmp/d"),
                                  ("file.rename", sb, "/tmp/a -> /tmp/b"),
                                  ("file.delete", sb, "/tmp/b")])
    assert "secret contents" not in c.get("/v1/audit?limit=1000", headers=auth).text


def test_user_extension_acts_as_root_with_root_home(harness: Harness, sb: str) -> None:
    assert put(harness, sb, "rc", b"x", user="root") == 204
    assert (root_of(harness, sb) / "root/rc").read_bytes() == b"x"
    r = harness.client.get(f"/v1/sandboxes/{sb}/stat?path=/&user=nobody-here", headers=harness.auth())
    assert r.status_code == 400
