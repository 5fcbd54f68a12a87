"""The Files tab over the real control plane and a real agent (its sandboxes are directories).

What a page changes is checked through the API (the same user's key) and on the
sandbox's disk; what a stranger or a cross-site request tries changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.test_audit import entries
from tests.unit.web.helpers import ORIGIN, WebClient, sign_in, text_of


def spawn(client: WebClient) -> str:
    r = client.api("POST", "/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": "tpl_python"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
def sb(web_member: WebClient) -> str:
    return spawn(web_member)


def root_of(h: Harness, sb: str) -> Path:
    return h.agent.rootfs(sb)


def put(client: WebClient, sb: str, path: str, data: bytes) -> None:
    r = client.api("PUT", f"/v1/sandboxes/{sb}/file", params={"path": path}, content=data)
    assert r.status_code == 204, r.text


def api_bytes(client: WebClient, sb: str, path: str) -> bytes | None:
    r = client.api("GET", f"/v1/sandboxes/{sb}/download", params={"path": path})
    return r.content if r.status_code == 200 else None


def upload(client: WebClient, sb: str, directory: str, name: str, data: bytes | Iterator[bytes],
           headers: dict[str, str] | None = None) -> httpx.Response:
    """A file as files.js sends it: its raw bytes, the directory and its name in the query."""
    return client.post(f"/sandboxes/{sb}/files/upload?path={quote(directory)}&name={quote(name)}",
                       content=data, htmx=False,
                       headers={"Content-Type": "application/octet-stream", **(headers or {})})


def test_the_tab_lists_the_home_directory_with_crumbs_types_and_sizes(
        web_member: WebClient, sb: str) -> None:
    put(web_member, sb, "/home/user/notes.txt", b"hello\n")
    put(web_member, sb, "/home/user/work/a.bin", b"\x00" * 2048)
    r = web_member.get(f"/sandboxes/{sb}/files")
    assert r.status_code == 200, r.text
    shown = text_of(r.text)
    assert "2 entries in /home/user" in shown
    assert shown.index("work/ directory") < shown.index("notes.txt file 6 B")  # directories first
    assert f'href="/sandboxes/{sb}/files?path=/home/user/work"' in r.text
    assert f'href="/sandboxes/{sb}/files/view?path=/home/user/notes.txt"' in r.text
    assert f'href="/sandboxes/{sb}/files?path=/home"' in r.text  # a crumb
    assert 'aria-current="location">user<' in r.text
    r = web_member.get(f"/sandboxes/{sb}/files?path=/home/user/work")
    assert "a.bin file 2.0 KiB" in text_of(r.text)
    fragment = web_member.get(f"/sandboxes/{sb}/files?path=/home/user/work", htmx=True)
    assert fragment.text.lstrip().startswith('<div id="files-listing"')
    r = web_member.get(f"/sandboxes/{sb}/files?path=/home/user/notes.txt")  # a file: its view
    assert (r.status_code, r.headers["location"]) == (303, f"/sandboxes/{sb}/files/view?path=/home/user/notes.txt")


def test_odd_names_are_escaped_and_quoted(web_member: WebClient, sb: str) -> None:
    name = "a&b <i>#?.txt"
    put(web_member, sb, f"/tmp/{name}", b"odd")
    r = web_member.get(f"/sandboxes/{sb}/files?path=/tmp")
    assert "<i>" not in r.text and "a&amp;b &lt;i&gt;#?.txt" in r.text
    href = f"/sandboxes/{sb}/files/view?path={quote('/tmp/' + name)}"
    assert href.replace("&", "&amp;") in r.text
    assert text_of(web_member.get(href).text).count("odd") >= 1


def test_a_text_file_is_shown_and_a_long_one_only_in_part(web_member: WebClient, sb: str) -> None:
    put(web_member, sb, "/tmp/hello.py", b"print('<hi>')\n")
    r = web_member.get(f"/sandboxes/{sb}/files/view?path=/tmp/hello.py")
    assert r.status_code == 200
    assert "print(&#39;&lt;hi&gt;&#39;)" in r.text
    assert f'href="/sandboxes/{sb}/files/download?path=/tmp/hello.py"' in r.text
    put(web_member, sb, "/tmp/long.txt", "é".encode() * 100_000)  # 200,000 bytes
    r = web_member.get(f"/sandboxes/{sb}/files/view?path=/tmp/long.txt")
    shown = text_of(r.text)
    assert "The first 64.0 KiB of 195.3 KiB" in shown
    assert r.text.count("é") == 32 * 1024  # the first 64 KiB, cut on a character
    r = web_member.get(f"/sandboxes/{sb}/files/view?path=/tmp")
    assert (r.status_code, r.headers["location"]) == (303, f"/sandboxes/{sb}/files?path=/tmp")


def test_a_binary_file_is_not_shown(web_member: WebClient, sb: str) -> None:
    put(web_member, sb, "/tmp/blob", bytes(range(256)) * 4)
    r = web_member.get(f"/sandboxes/{sb}/files/view?path=/tmp/blob")
    assert r.status_code == 200
    assert "Binary file (1.0 KiB)" in text_of(r.text) and "<pre" not in r.text


def test_download_streams_the_bytes_as_an_attachment(web_member: WebClient, sb: str) -> None:
    data = os.urandom(300_000)
    name = 'rapport é;"x.bin'
    put(web_member, sb, f"/tmp/{name}", data)
    r = web_member.get(f"/sandboxes/{sb}/files/download?path={quote('/tmp/' + name)}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"rapport____x.bin\"; filename*=UTF-8''rapport%20%C3%A9%3B%22x.bin")
    r = web_member.get(f"/sandboxes/{sb}/files/download?path=/tmp/missing")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert "Not found /tmp/missing: no such file or directory" in text_of(r.text) and '{"error"' not in r.text


def test_upload_writes_the_bytes_streamed_and_audited(web_member: WebClient, sb: str, harness: Harness) -> None:
    data = os.urandom(200_000)
    r = upload(web_member, sb, "/home/user", "up.bin", data)
    assert r.status_code == 204, r.text
    assert api_bytes(web_member, sb, "/home/user/up.bin") == data

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"z" * 65536

    r = upload(web_member, sb, "/home/user", "chunked.bin", chunks())
    assert r.status_code == 204
    assert (root_of(harness, sb) / "home/user/chunked.bin").stat().st_size == 8 * 65536
    assert harness.agent.requests("PUT", f"/sandboxes/{sb}/files/content")[-1].chunks > 1
    got = [(e["action"], e["targetId"], e["detail"]) for e in entries(harness) if e["action"] == "file.write"]
    assert ("file.write", sb, "write /home/user/up.bin") in got


def test_upload_over_the_cap_is_refused_and_keeps_nothing(tmp_path: Path) -> None:
    for h in make_harness(tmp_path, database=None, max_file_bytes=1000):
        member = sign_in(h, "capped@example.com")
        sb = spawn(member)
        r = upload(member, sb, "/home/user", "big", b"x" * 1001, headers={"HX-Request": "true"})
        assert r.status_code == 413
        assert "Too large" in text_of(r.text)
        assert not (h.agent.rootfs(sb) / "home/user/big").exists()
        page = member.get(f"/sandboxes/{sb}/files")
        assert 'data-max-bytes="1000"' in page.text


def test_upload_names_must_be_plain(web_member: WebClient, sb: str, harness: Harness) -> None:
    for name in ("../escape", "a/b", "..", ""):
        r = upload(web_member, sb, "/home/user", name, b"x")
        assert r.status_code == 400, name
    assert not (root_of(harness, sb) / "escape").exists()
    r = upload(web_member, sb, "/tmp/not-there", "f", b"x")  # into a directory that is not there
    assert r.status_code == 404
    assert not (root_of(harness, sb) / "tmp/not-there").exists()


def test_mkdir_and_delete(web_member: WebClient, sb: str, harness: Harness) -> None:
    r = web_member.post(f"/sandboxes/{sb}/files/mkdir", data={"path": "/home/user", "name": "made"})
    assert r.status_code == 200 and "made/" in text_of(r.text)  # the listing again
    assert r.text.lstrip().startswith('<div id="files-listing"')
    stat = web_member.api("GET", f"/v1/sandboxes/{sb}/stat", params={"path": "/home/user/made"}).json()
    assert stat["exists"] and stat["isDir"]
    r = web_member.post(f"/sandboxes/{sb}/files/mkdir", data={"path": "/home/user", "name": "made"})
    assert r.status_code == 409 and r.headers["hx-retarget"] == "#alerts"
    put(web_member, sb, "/home/user/made/inside.txt", b"1")
    r = web_member.post(f"/sandboxes/{sb}/files/delete", data={"path": "/home/user/made"})
    assert r.status_code == 409  # not empty: kept
    assert api_bytes(web_member, sb, "/home/user/made/inside.txt") == b"1"
    r = web_member.post(f"/sandboxes/{sb}/files/delete", data={"path": "/home/user/made/inside.txt"})
    assert r.status_code == 200 and "This directory is empty." in text_of(r.text)
    r = web_member.post(f"/sandboxes/{sb}/files/delete", data={"path": "/home/user/made"})
    assert r.status_code == 200 and "made/" not in text_of(r.text)
    assert not (root_of(harness, sb) / "home/user/made").exists()
    # A plain form (no script): back to the listing.
    r = web_member.post(f"/sandboxes/{sb}/files/mkdir", htmx=False,
                        data={"path": "/home/user", "name": "plain", "csrf_token": web_member.csrf},
                        headers={"X-CSRF-Token": ""})
    assert (r.status_code, r.headers["location"]) == (303, f"/sandboxes/{sb}/files?path=/home/user")
    assert (root_of(harness, sb) / "home/user/plain").is_dir()
    got = [(e["action"], e["detail"]) for e in entries(harness)
           if e["action"] in ("file.mkdir", "file.delete") and e["targetId"] == sb]
    assert ("file.mkdir", "/home/user/made") in got and ("file.delete", "/home/user/made") in got


def test_a_stranger_gets_the_apis_404_and_changes_nothing(
        web_member: WebClient, stranger: WebClient, sb: str, harness: Harness) -> None:
    put(web_member, sb, "/home/user/secret.txt", b"owner's secret")
    api = stranger.api("GET", f"/v1/sandboxes/{sb}/files", params={"path": "/home/user"})
    assert api.status_code == 404
    for path in (f"/sandboxes/{sb}/files", f"/sandboxes/{sb}/files?path=/home/user",
                 f"/sandboxes/{sb}/files/view?path=/home/user/secret.txt",
                 f"/sandboxes/{sb}/files/download?path=/home/user/secret.txt"):
        r = stranger.get(path)
        assert r.status_code == 404, path
        assert "owner's secret" not in r.text and "secret.txt" not in r.text
    assert upload(stranger, sb, "/home/user", "secret.txt", b"overwritten").status_code == 404
    assert upload(stranger, sb, "/home/user", "../bad", b"x").status_code == 404
    r = stranger.post(f"/sandboxes/{sb}/files/mkdir", data={"path": "/home/user", "name": "intruder"})
    assert r.status_code == 404
    r = stranger.post(f"/sandboxes/{sb}/files/delete", data={"path": "/home/user/secret.txt"})
    assert r.status_code == 404
    assert api_bytes(web_member, sb, "/home/user/secret.txt") == b"owner's secret"
    assert not (root_of(harness, sb) / "home/user/intruder").exists()


def test_a_cross_site_or_tokenless_change_is_refused(web_member: WebClient, sb: str, harness: Harness) -> None:
    attempts = [
        {"headers": {"Origin": "https://evil.example"}},
        {"headers": {"X-CSRF-Token": ""}},
        {"headers": {"X-CSRF-Token": "not-the-token"}},
        {"headers": {"Origin": ""}},
    ]
    for how in attempts:
        r = upload(web_member, sb, "/home/user", "planted", b"x", headers=how["headers"])
        assert r.status_code == 403, how
        assert "cross-site request refused" in text_of(r.text)
    put(web_member, sb, "/tmp/keep", b"k")
    r = web_member.client.post(f"/sandboxes/{sb}/files/delete", data={"path": "/tmp/keep"},
                               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = web_member.client.post(f"/sandboxes/{sb}/files/mkdir", data={"path": "/home/user", "name": "x",
                                                                      "csrf_token": "wrong"},
                               headers={"Origin": ORIGIN})
    assert r.status_code == 403
    home = root_of(harness, sb) / "home/user"
    assert not (home / "planted").exists() and not (home / "x").exists()
    assert api_bytes(web_member, sb, "/tmp/keep") == b"k"


def test_paths_outside_the_sandbox_get_the_apis_answer_never_the_hosts_files(
        web_member: WebClient, sb: str, harness: Harness) -> None:
    """``..`` stops at the sandbox's root and links resolve inside it: /etc is the sandbox's own."""
    root = root_of(harness, sb)
    own_passwd = (root / "etc/passwd").read_bytes()
    assert own_passwd != Path("/etc/passwd").read_bytes() and Path("/etc/os-release").exists()
    (root / "home/user/etc-link").symlink_to("/etc")
    (root / "home/user/passwd-link").symlink_to("/etc/passwd")
    (root / "home/user/release-link").symlink_to("../../../../../../../etc/os-release")
    cases = {"../../etc/passwd": 200, "/home/user/../../../etc/passwd": 200, "etc-link/passwd": 200,
             "passwd-link": 200, "../../etc/os-release": 404, "release-link": 404, "etc-link/os-release": 404}
    for path, status in cases.items():
        api = web_member.api("GET", f"/v1/sandboxes/{sb}/download", params={"path": path})
        assert api.status_code == status, (path, api.text)
        download = web_member.get(f"/sandboxes/{sb}/files/download?path={quote(path)}")
        assert download.status_code == status
        view = web_member.get(f"/sandboxes/{sb}/files/view?path={quote(path)}")
        assert view.status_code == status, path
        if status == 200:
            assert download.content == own_passwd
            assert own_passwd.decode().splitlines()[0] in view.text
        else:
            assert "no such file or directory" in text_of(view.text) and "PRETTY_NAME" not in view.text
    r = web_member.get(f"/sandboxes/{sb}/files?path=/home/user/etc-link")  # listed as the sandbox's /etc
    assert r.status_code == 200
    listed = {e["name"] for e in web_member.api("GET", f"/v1/sandboxes/{sb}/files",
                                                  params={"path": "/home/user/etc-link"}).json()}
    assert listed == {"group", "hosts", "hostname", "passwd"}
    assert f"{len(listed)} entries in /home/user/etc-link" in text_of(r.text)
    assert "os-release" not in r.text


def test_an_ended_sandbox_says_so(web_member: WebClient, sb: str) -> None:
    web_member.api("DELETE", f"/v1/sandboxes/{sb}")
    r = web_member.get(f"/sandboxes/{sb}/files")
    assert r.status_code == 200
    assert "Files can be browsed while the sandbox runs" in text_of(r.text)
    r = upload(web_member, sb, "/tmp", "late", b"x")
    assert r.status_code == 409
