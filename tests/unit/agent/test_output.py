"""The output spool: decoding, the cap and its marker, offsets, disk, release."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from qbox.agent import output
from qbox.agent.output import (
    CHECKPOINT_BYTES,
    DISK_FULL_MARKER,
    READ_CHUNK_CHARS,
    OutputSpool,
    truncation_marker,
)


def _open_files(directory: Path) -> list[str]:
    """This process's open files in ``directory``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "output"
    directory.mkdir()
    return directory


def test_multibyte_characters_split_across_reads_decode_whole(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    data = "héllo €".encode()
    for i in range(len(data)):
        spool.feed(data[i:i + 1])
    spool.close()
    assert spool.text() == "héllo €"


def test_invalid_utf8_is_replaced(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed(b"ok \xff\xfe end")
    spool.close()
    assert spool.text() == "ok \ufffd\ufffd end"


def test_incomplete_trailing_character_becomes_a_replacement_at_close(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed("€".encode()[:2])
    assert spool.text() == ""
    spool.close()
    assert spool.text() == "\ufffd"


def test_output_past_the_cap_is_cut_with_one_marker_and_never_shrinks(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir, cap_bytes=10)
    spool.feed(b"0123456")
    first = spool.text()
    spool.feed(b"789abcdef")
    spool.feed(b"more and more")
    spool.close()
    text = spool.text()
    assert text.startswith(first)
    assert text == "0123456789" + truncation_marker(10)
    assert spool.truncated and spool.bytes_kept == 10
    # The marker is part of the text for offsets too.
    assert spool.text_from(10) == truncation_marker(10) and len(spool) == len(text)


def test_marker_names_mebibytes() -> None:
    assert "16 MiB" in truncation_marker(16 * 1024 * 1024)


def test_text_is_cumulative(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed(b"a")
    assert spool.text() == "a"
    spool.feed(b"b")
    spool.feed(b"c")
    assert spool.text() == "abc"
    assert len(spool) == 3


def test_the_text_is_on_disk_and_no_file_stays_open_once_the_stream_ends(
        spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed(b"x" * 300_000)
    assert [p.name for p in spool_dir.iterdir()] == [spool.path.name]
    assert spool.path.stat().st_size == 300_000 and spool.path.stat().st_mode & 0o777 == 0o600
    assert len(_open_files(spool_dir)) == 1  # while the command may still write
    spool.close()
    # A finished record holds no descriptor (a thousand of them must not exhaust the
    # agent's file limit); reads open the file.
    assert _open_files(spool_dir) == []
    assert spool.read(299_990) == "x" * 10 and _open_files(spool_dir) == []
    spool.release()
    assert list(spool_dir.iterdir()) == []


def test_character_offsets_across_checkpoints_with_multibyte_text(spool_dir: Path) -> None:
    # Two- and three-byte characters in uneven reads: character offsets never fall
    # inside a character, wherever the byte checkpoints are.
    text = "".join(("é€a"[i % 3]) * (i % 7 + 1) for i in range(60_000))
    data = text.encode()
    spool = OutputSpool(spool_dir)
    for start in range(0, len(data), 9_999):
        spool.feed(data[start:start + 9_999])
    spool.close()
    assert len(spool) == len(text) and len(spool._marks_bytes) > 2
    assert spool.text() == text
    for offset in (0, 1, 5, CHECKPOINT_BYTES // 2, CHECKPOINT_BYTES - 1, CHECKPOINT_BYTES,
                   len(text) - 3, len(text), len(text) + 5):
        assert spool.text_from(offset) == text[offset:]
        assert spool.read(offset, 7) == text[offset:offset + 7]
    spool.release()


def test_chunks_are_bounded_and_stop_at_the_given_end(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed(b"y" * (3 * READ_CHUNK_CHARS + 5))
    chunks = list(spool.chunks(3))
    assert all(len(c) <= READ_CHUNK_CHARS for c in chunks) and len(chunks) == 4
    assert "".join(chunks) == "y" * (3 * READ_CHUNK_CHARS + 2)
    assert "".join(spool.chunks(10, 20)) == "y" * 10
    spool.release()


def test_release_frees_the_file_and_reads_find_nothing(spool_dir: Path) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed(b"some output")
    assert _open_files(spool_dir)
    spool.release()
    spool.release()  # idempotent
    assert _open_files(spool_dir) == [] and list(spool_dir.iterdir()) == []
    assert spool.closed and spool.text() == "" and list(spool.chunks(0, 5)) == []
    spool.feed(b"more")  # a pump still draining the pipe: dropped
    assert spool.text() == ""


def test_a_full_disk_ends_the_text_with_a_marker(spool_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spool = OutputSpool(spool_dir)
    spool.feed(b"kept\n")
    real_pwrite = os.pwrite

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        if len(data) > 2:
            return real_pwrite(fd, data[:2], offset)  # part of it fits...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then no more

    monkeypatch.setattr(output.os, "pwrite", half_then_full)
    spool.feed("lost €€€".encode())
    spool.feed(b"also lost")
    monkeypatch.undo()
    spool.close()
    # The half-written part is cut off again: the file holds whole pieces only.
    assert spool.text() == "kept\n" + DISK_FULL_MARKER
    assert spool.path.stat().st_size == len(b"kept\n")
    spool.release()
