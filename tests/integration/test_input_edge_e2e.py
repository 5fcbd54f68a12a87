"""The input edge on a real `qbox up` (issue 13, findings 2, 5 and 12): an unauthenticated
chunked body leaves the control plane's memory where it was, the HTTP server's own refusals
carry the envelope, and a lone surrogate is a 400 that creates nothing."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.qbox_process import QboxUp, running_qbox

CHUNK = 64 * 1024
BODY_MB = 64
MAX_GROWTH_MB = 20


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.fixture(scope="module")
def up() -> Iterator[QboxUp]:
    base = Path(tempfile.mkdtemp(prefix="qbox-it-edge-"))
    try:
        with running_qbox(base / "data") as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _answer(conn: socket.socket) -> tuple[int, dict]:  # type: ignore[type-arg]
    """The first response on ``conn`` (by its Content-Length; the connection may stay open)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body[:_length(data)])


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_a_chunked_login_body_does_not_grow_the_server(up: QboxUp) -> None:
    """64 MB sent chunked to the unauthenticated login: answered 413 at the limit, the
    connection closed, and the control plane's memory where it was (it was +512 MB)."""
    pid = up.process.pid
    before = peak = rss_mb(pid)
    done = threading.Event()
    answer: list[tuple[int, dict]] = []  # type: ignore[type-arg]

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, rss_mb(pid))

    sent = 0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with socket.create_connection(("127.0.0.1", up.port), timeout=60) as conn:
            reader = threading.Thread(target=lambda: answer.append(_answer(conn)), daemon=True)
            conn.sendall(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            reader.start()
            piece = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
            try:
                while sent < BODY_MB * 1024 * 1024:
                    conn.sendall(piece)
                    sent += CHUNK
                conn.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before the end: what a bounded reader does
            reader.join(30)
    finally:
        done.set()
        sampler.join(5)
    print(f"control plane RSS {before:.0f} -> peak {peak:.0f} MB; {sent} bytes sent before the server closed")
    assert answer, "no answer"
    status, body = answer[0]
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert sent < BODY_MB * 1024 * 1024, "the server read the whole body instead of closing"
    assert peak - before < MAX_GROWTH_MB, f"control plane RSS {before:.0f} -> {peak:.0f} MB for a {BODY_MB} MB body"


def test_a_100_kb_url_gets_the_envelope(up: QboxUp) -> None:
    with socket.create_connection(("127.0.0.1", up.port), timeout=30) as conn:
        conn.sendall(b"GET /v1/sandboxes?x=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = _answer(conn)
    assert status == 400 and body["error"]["code"] == "validation_error"


def test_a_surrogate_label_is_a_400_and_listing_still_works(up: QboxUp) -> None:
    with up.client() as api:
        raw = b'{"templateId":"tpl_python","labels":{"k":"\\ud800"}}'
        r = api.post("/v1/sandboxes", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["details"]["fieldErrors"] == {
            "labels.k": "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"}
        listing = api.get("/v1/sandboxes")
        assert listing.status_code == 200 and listing.json() == []
