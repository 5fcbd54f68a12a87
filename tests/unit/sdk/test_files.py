"""sandbox.files: wire shapes per WIRE_PROTOCOL §4.4, streaming both ways, errors, recursion, async twins."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox import (
    AsyncSandbox,
    ConflictError,
    ConnectionFailedError,
    FileEncodingError,
    FileEntry,
    FileStat,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QboxError,
    Sandbox,
    UnavailableError,
    ValidationError,
)
from qbox.sdk._steps import CHUNK_SIZE
from tests.unit.sdk.fakes import FakeServer, error, reply, sandbox

SB = "/v1/sandboxes/sb_1"
DOWNLOAD = SB + "/download"
FILE = SB + "/file"
FILES = SB + "/files"
STAT = SB + "/stat"
TRANSIENT = error(503, "unavailable", details={"transient": True})


class RawBodyServer(FakeServer):
    """A FakeServer that also takes raw (non-JSON) bodies, keeping them as bytes in ``Seen.body``."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if "content-type" in request.headers or not request.content:
            return super().handle(request)
        raw = request.content
        response = super().handle(httpx.Request(request.method, request.url, headers=request.headers))
        self.seen[-1].body = raw
        return response


class ChunkRecorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Reads request bodies chunk by chunk as a real connection would, noting each chunk's size."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.chunks: list[int] = []

    def _forward(self, request: httpx.Request, chunks: list[bytes]) -> httpx.Response:
        self.chunks += [len(c) for c in chunks if c]
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=b"".join(chunks))
        forwarded.extensions = request.extensions
        return self.server.handle(forwarded)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        return self._forward(request, list(request.stream))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        return self._forward(request, [chunk async for chunk in request.stream])


class ReadSpy(io.BytesIO):
    """A binary file whose reads are recorded, to prove nobody reads it whole."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(size)
        return super().read(size)


@pytest.fixture
def server() -> RawBodyServer:
    return RawBodyServer()


def connect(server: FakeServer, **config: Any) -> Sandbox:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    return Sandbox.connect("sb_1", config=server.config(**config))


async def aconnect(server: FakeServer, **config: Any) -> AsyncSandbox:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    return await AsyncSandbox.connect("sb_1", config=server.config(**config))


def chunked_body(parts: list[bytes], produced: list[int]) -> Iterator[bytes]:
    for index, part in enumerate(parts):
        produced.append(index)
        yield part


async def achunked_body(parts: list[bytes], produced: list[int]) -> AsyncIterator[bytes]:
    for index, part in enumerate(parts):
        produced.append(index)
        yield part


# --- reads -------------------------------------------------------------------------------------


def test_read_text_and_bytes_go_through_download(server: RawBodyServer) -> None:
    server.on("GET", DOWNLOAD, httpx.Response(200, content="héllo\n".encode()))
    sb = connect(server)
    assert sb.files.read("/tmp/a b.txt") == "héllo\n"
    assert sb.files.read("notes.txt", format="bytes") == "héllo\n".encode()
    seen = [s for s in server.seen if s.path == DOWNLOAD]
    assert [s.params for s in seen] == [{"path": "/tmp/a b.txt"}, {"path": "notes.txt"}]
    assert seen[0].headers["accept"] == "application/json"
    assert seen[0].timeout["read"] == 30.0


def test_read_text_that_is_not_utf8_raises_a_clear_error(server: RawBodyServer) -> None:
    server.on("GET", DOWNLOAD, httpx.Response(200, content=b"ok\xff\xfe"))
    sb = connect(server)
    with pytest.raises(FileEncodingError) as info:
        sb.files.read("/bin/blob")
    assert info.value.code == "not_utf8"
    assert info.value.details == {"path": "/bin/blob", "offset": 2}
    assert "format='bytes'" in info.value.message
    assert sb.files.read("/bin/blob", format="bytes") == b"ok\xff\xfe"


def test_buffered_reads_retry_transient_errors(server: RawBodyServer) -> None:
    server.on("GET", DOWNLOAD, TRANSIENT, httpx.Response(200, content=b"x"))
    sb = connect(server)
    assert sb.files.read("/f", format="bytes") == b"x"
    assert server.targets.count(f"GET {DOWNLOAD}") == 2


def test_read_rejects_an_unknown_format(server: RawBodyServer) -> None:
    sb = connect(server)
    with pytest.raises(ValueError, match="format"):
        sb.files.read("/f", format="lines")  # type: ignore[call-overload]


def test_stream_read_yields_chunks_without_buffering_the_file(server: RawBodyServer) -> None:
    parts = [b"a" * CHUNK_SIZE, b"b" * CHUNK_SIZE, b"c" * 10]
    produced: list[int] = []
    server.on("GET", DOWNLOAD, lambda _request: httpx.Response(200, content=chunked_body(parts, produced)))
    sb = connect(server)
    stream = sb.files.read("/big", format="stream")
    first = next(stream)
    assert first == parts[0]
    assert produced == [0]  # the rest of the file has not even been produced yet
    assert list(stream) == parts[1:]
    seen = server.last("GET", DOWNLOAD)
    assert seen.params == {"path": "/big"}
    assert set(seen.timeout.values()) == {None}  # streamed reads have no timeout


def test_stream_read_errors_are_mapped_before_any_chunk(server: RawBodyServer) -> None:
    server.on("GET", DOWNLOAD, error(404, "not_found", "no such file: /nope"), TRANSIENT)
    sb = connect(server)
    with pytest.raises(NotFoundError) as info:
        sb.files.read("/nope", format="stream")
    assert (info.value.message, info.value.request_id) == ("no such file: /nope", "req_test")
    with pytest.raises(UnavailableError):  # transient, yet a stream is never retried
        sb.files.read("/nope", format="stream")
    assert server.targets.count(f"GET {DOWNLOAD}") == 2


def test_a_broken_stream_raises_a_qbox_error(server: RawBodyServer) -> None:
    def broken() -> Iterator[bytes]:
        yield b"part"
        raise httpx.ReadError("connection reset")

    server.on("GET", DOWNLOAD, lambda _request: httpx.Response(200, content=broken()))
    stream = connect(server).files.read("/f", format="stream")
    assert next(stream) == b"part"
    with pytest.raises(ConnectionFailedError, match="connection reset"):
        next(stream)


# --- writes ------------------------------------------------------------------------------------


def test_write_text_puts_raw_bytes_without_a_content_type(server: RawBodyServer) -> None:
    server.on("PUT", FILE, reply(204))
    sb = connect(server)
    sb.files.write("/tmp/a b.txt", "héllo")
    put = server.last("PUT", FILE)
    assert put.params == {"path": "/tmp/a b.txt", "mode": "644"}
    assert put.body == "héllo".encode()
    assert "content-type" not in put.headers
    assert put.headers["authorization"] == "Bearer qbox_testkey"


def test_write_mode_and_create_parents(server: RawBodyServer) -> None:
    server.on("PUT", FILE, reply(204))
    sb = connect(server)
    sb.files.write("key", b"\x00secret", mode=0o600, create_parents=False)
    put = server.last("PUT", FILE)
    assert put.params == {"path": "key", "mode": "600", "createParents": "false"}
    assert put.body == b"\x00secret"


def test_write_empty_file_sends_content_length_zero(server: RawBodyServer) -> None:
    server.on("PUT", FILE, reply(204))
    connect(server).files.write("/empty", b"")
    put = server.last("PUT", FILE)
    assert put.headers["content-length"] == "0"
    assert "content-type" not in put.headers


def test_append_uses_the_append_extension(server: RawBodyServer) -> None:
    server.on("PUT", FILE, reply(204))
    sb = connect(server)
    sb.files.append("/var/log/app.log", "line\n")
    sb.files.append("/run/x", b"y", mode=0o640)
    puts = [s for s in server.seen if s.method == "PUT"]
    assert [p.params for p in puts] == [
        {"path": "/var/log/app.log", "mode": "644", "append": "true"},
        {"path": "/run/x", "mode": "640", "append": "true"},
    ]
    assert [p.body for p in puts] == [b"line\n", b"y"]
    assert [s.method for s in server.seen].count("GET") == 1  # no read-modify-write


def test_a_large_upload_is_sent_in_chunks_never_read_whole(server: RawBodyServer) -> None:
    recorder = ChunkRecorder(server)
    server.on("PUT", FILE, reply(204))
    sb = connect(server, transport=recorder)
    data = bytes(range(256)) * (4 * CHUNK_SIZE // 256) + b"tail"
    source = ReadSpy(data)
    progress: list[tuple[int, int | None]] = []
    sb.files.write("/big.bin", source, on_progress=lambda done, total: progress.append((done, total)))
    assert recorder.chunks == [CHUNK_SIZE] * 4 + [4]
    assert set(source.sizes) == {CHUNK_SIZE}  # never read(-1)
    put = server.last("PUT", FILE)
    assert put.body == data
    assert put.headers["content-length"] == str(len(data))  # known size: not chunked encoding
    assert "content-type" not in put.headers
    assert progress[0] == (0, len(data))
    assert progress[-1] == (len(data), len(data))
    assert len(progress) == 6


def test_an_upload_from_a_pipe_goes_chunked(server: RawBodyServer) -> None:
    class Pipe:
        def __init__(self, data: bytes) -> None:
            self._buffer = io.BytesIO(data)

        def read(self, size: int = -1, /) -> bytes:
            return self._buffer.read(min(size, 1000))

    server.on("PUT", FILE, reply(204))
    connect(server).files.write("/p", Pipe(b"z" * 2500))  # type: ignore[arg-type]
    put = server.last("PUT", FILE)
    assert put.body == b"z" * 2500
    assert put.headers["transfer-encoding"] == "chunked"


def test_uploads_are_never_retried(server: RawBodyServer) -> None:
    server.on("PUT", FILE, TRANSIENT)
    sb = connect(server)
    with pytest.raises(UnavailableError):
        sb.files.write("/f", io.BytesIO(b"data"))
    with pytest.raises(UnavailableError):
        sb.files.append("/f", "more")
    assert server.targets.count(f"PUT {FILE}") == 2


def test_write_refuses_text_files_and_bad_modes_without_a_request(server: RawBodyServer) -> None:
    sb = connect(server)
    with pytest.raises(TypeError, match="'rb'"):
        sb.files.write("/f", io.StringIO("text"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sb.files.write("/f", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        sb.files.write("/f", "x", mode=0o10000)
    with pytest.raises(ValueError, match="path"):
        sb.files.write("", "x")
    assert server.targets == [f"GET {SB}"]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (403, "permission_denied", PermissionDeniedError),
        (400, "validation_error", ValidationError),
        (413, "payload_too_large", PayloadTooLargeError),
        (507, "insufficient_storage", InsufficientStorageError),
    ],
)
def test_errors_map_to_their_classes(server: RawBodyServer, status: int, code: str, cls: type[QboxError]) -> None:
    for method, path in (("PUT", FILE), ("GET", DOWNLOAD), ("GET", FILES), ("POST", SB + "/files/mkdir")):
        server.on(method, path, error(status, code, "refused"))
    sb = connect(server)
    for call in (
        lambda: sb.files.write("/f", "x"),
        lambda: sb.files.read("/f"),
        lambda: sb.files.list("/d"),
        lambda: sb.files.mkdir("/d"),
    ):
        with pytest.raises(cls) as info:
            call()
        assert (info.value.code, info.value.status, info.value.message) == (code, status, "refused")


# --- listing, stat and the rest ---------------------------------------------------------------


def entry(name: str, is_dir: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "isDir": is_dir,
        "size": 4096 if is_dir else 3,
        "mode": "drwxr-xr-x" if is_dir else "-rw-r--r--",
        "mtime": "2025-01-02T03:04:05.000000Z",
        **extra,
    }


def test_list_parses_entries_and_builds_paths(server: RawBodyServer) -> None:
    server.on("GET", FILES, reply(200, [entry("etc", True), entry("a.txt")]))
    found = connect(server).files.list("/")
    assert found == [
        FileEntry("etc", "/etc", True, 4096, "drwxr-xr-x", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        FileEntry("a.txt", "/a.txt", False, 3, "-rw-r--r--", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ]
    assert server.last("GET", FILES).params == {"path": "/"}


def recursive_server(server: FakeServer) -> None:
    listings = {
        "/w/": [entry("src", True), entry("link", False, mode="Lrwxrwxrwx"), entry("."), entry("..", True)],
        "/w/src": [entry("pkg", True), entry("main.py")],
        "/w/src/pkg": [entry("mod.py")],
    }
    server.on("GET", FILES, lambda request: reply(200, listings[request.url.params["path"]]))


def test_list_depth_recurses_per_directory_and_never_into_links(server: RawBodyServer) -> None:
    recursive_server(server)
    sb = connect(server)
    assert [e.path for e in sb.files.list("/w/", depth=2)] == ["/w/src", "/w/src/pkg", "/w/src/main.py", "/w/link"]
    assert [s.params["path"] for s in server.seen if s.path == FILES] == ["/w/", "/w/src"]
    everything = sb.files.list("/w/", depth=None)
    assert [e.path for e in everything] == ["/w/src", "/w/src/pkg", "/w/src/pkg/mod.py", "/w/src/main.py", "/w/link"]
    with pytest.raises(ValueError, match="depth"):
        sb.files.list("/w", depth=0)


def test_stat_and_exists(server: RawBodyServer) -> None:
    found = {
        "path": "/etc/alt",
        "exists": True,
        "size": 12,
        "mode": "Lrwxrwxrwx",
        "isDir": False,
        "isSymlink": True,
        "symlinkTarget": "/etc/real",
        "modifiedAt": "2025-01-02T03:04:05.500000Z",
    }
    missing = {"path": "/nope", "exists": False, "symlinkTarget": ""}
    server.on("GET", STAT, reply(200, found), reply(200, missing), reply(200, missing))
    sb = connect(server)
    info = sb.files.stat("/etc/alt")
    assert info == FileStat(
        "/etc/alt", True, 12, "Lrwxrwxrwx", False, True, "/etc/real", datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    )
    assert sb.files.stat("/nope") == FileStat("/nope", False)
    assert sb.files.exists("/nope") is False
    assert [s.params["path"] for s in server.seen if s.path == STAT] == ["/etc/alt", "/nope", "/nope"]


def test_remove_mkdir_rename(server: RawBodyServer) -> None:
    server.on("DELETE", FILE, reply(204))
    server.on("POST", SB + "/files/mkdir", reply(204))
    server.on("POST", SB + "/files/rename", reply(204))
    sb = connect(server)
    sb.files.remove("/tmp/x")
    sb.files.remove("/tmp/d", recursive=True)
    sb.files.mkdir("/srv/app")
    sb.files.mkdir("/srv/secret", mode=0o700, parents=False)
    sb.files.rename("/a", "/b")
    assert [s.params for s in server.seen if s.method == "DELETE"] == [
        {"path": "/tmp/x"},
        {"path": "/tmp/d", "recursive": "true"},
    ]
    assert [s.body for s in server.seen if s.method == "POST"] == [
        {"path": "/srv/app", "mode": 493, "parents": True},
        {"path": "/srv/secret", "mode": 448, "parents": False},
        {"src": "/a", "dst": "/b"},
    ]
    assert server.last("POST", SB + "/files/rename").headers["content-type"] == "application/json"


# --- local transfers ---------------------------------------------------------------------------


def test_download_streams_to_disk(server: RawBodyServer, tmp_path: Path) -> None:
    parts = [b"1" * CHUNK_SIZE, b"2" * 7]
    size = str(sum(map(len, parts)))
    server.on(
        "GET",
        DOWNLOAD,
        lambda _request: httpx.Response(200, content=chunked_body(parts, []), headers={"Content-Length": size}),
    )
    progress: list[tuple[int, int | None]] = []
    target = tmp_path / "out.bin"
    connect(server).files.download("/data.bin", target, on_progress=lambda *p: progress.append(p))
    assert target.read_bytes() == b"".join(parts)
    assert progress == [(0, CHUNK_SIZE + 7), (CHUNK_SIZE, CHUNK_SIZE + 7), (CHUNK_SIZE + 7, CHUNK_SIZE + 7)]
    seen = server.last("GET", DOWNLOAD)
    assert seen.params == {"path": "/data.bin"}
    assert set(seen.timeout.values()) == {None}


def test_failed_downloads_leave_no_file(server: RawBodyServer, tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise httpx.RemoteProtocolError("peer closed connection")

    server.on("GET", DOWNLOAD, error(404, "not_found"), lambda _request: httpx.Response(200, content=broken()))
    sb = connect(server)
    with pytest.raises(NotFoundError):
        sb.files.download("/nope", tmp_path / "a")
    with pytest.raises(ConnectionFailedError):
        sb.files.download("/f", tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_upload_streams_from_disk(server: RawBodyServer, tmp_path: Path) -> None:
    recorder = ChunkRecorder(server)
    server.on("PUT", FILE, reply(204))
    source = tmp_path / "model.bin"
    source.write_bytes(b"m" * (2 * CHUNK_SIZE + 1))
    connect(server, transport=recorder).files.upload(source, "/models/m.bin", mode=0o600)
    assert recorder.chunks == [CHUNK_SIZE, CHUNK_SIZE, 1]
    put = server.last("PUT", FILE)
    assert put.params == {"path": "/models/m.bin", "mode": "600"}
    assert put.headers["content-length"] == str(2 * CHUNK_SIZE + 1)
    assert put.body == source.read_bytes()


# --- async twins -------------------------------------------------------------------------------


async def test_async_reads_and_stream(server: RawBodyServer) -> None:
    parts = [b"x" * CHUNK_SIZE, b"y" * 5]
    produced: list[int] = []
    server.on(
        "GET",
        DOWNLOAD,
        httpx.Response(200, content=b"text"),
        lambda _request: httpx.Response(200, content=achunked_body(parts, produced)),
        error(404, "not_found"),
    )
    sb = await aconnect(server)
    assert await sb.files.read("/t") == "text"
    stream = await sb.files.read("/big", format="stream")
    assert await anext(stream) == parts[0]
    assert produced == [0]
    assert [chunk async for chunk in stream] == parts[1:]
    with pytest.raises(NotFoundError):
        await sb.files.read("/gone", format="stream")
    await sb.close()


async def test_async_write_streams_in_chunks(server: RawBodyServer) -> None:
    recorder = ChunkRecorder(server)
    server.on("PUT", FILE, reply(204))
    sb = await aconnect(server, transport=recorder)
    source = ReadSpy(b"q" * (CHUNK_SIZE + 3))
    await sb.files.write("/q", source, mode=0o755)
    await sb.files.append("/q", "!")
    assert recorder.chunks == [CHUNK_SIZE, 3, 1]
    assert set(source.sizes) == {CHUNK_SIZE}
    puts = [s for s in server.seen if s.method == "PUT"]
    assert [p.params for p in puts] == [
        {"path": "/q", "mode": "755"},
        {"path": "/q", "mode": "644", "append": "true"},
    ]


async def test_async_listing_stat_and_transfers(server: RawBodyServer, tmp_path: Path) -> None:
    recursive_server(server)
    server.on("GET", STAT, reply(200, {"path": "/w", "exists": True, "isDir": True}))
    server.on("GET", DOWNLOAD, lambda _request: httpx.Response(200, content=achunked_body([b"ab", b"c"], [])))
    server.on("PUT", FILE, reply(204))
    server.on("DELETE", FILE, reply(204))
    server.on("POST", SB + "/files/mkdir", reply(204))
    server.on("POST", SB + "/files/rename", reply(204))
    sb = await aconnect(server)
    assert [e.name for e in await sb.files.list("/w/", depth=3)] == ["src", "pkg", "mod.py", "main.py", "link"]
    assert await sb.files.exists("/w") is True
    await sb.files.download("/f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"abc"
    await sb.files.upload(tmp_path / "f", "/g")
    assert server.last("PUT", FILE).body == b"abc"
    await sb.files.remove("/g", recursive=True)
    await sb.files.mkdir("/m", mode=0o700)
    await sb.files.rename("/m", "/n")
    assert server.last("DELETE", FILE).params == {"path": "/g", "recursive": "true"}
    assert server.last("POST", SB + "/files/mkdir").body == {"path": "/m", "mode": 448, "parents": True}
    assert server.last("POST", SB + "/files/rename").body == {"src": "/m", "dst": "/n"}
