from __future__ import annotations

from qbox.agent.output import OutputBuffer, truncation_marker


def test_multibyte_characters_split_across_reads_decode_whole() -> None:
    buffer = OutputBuffer()
    data = "héllo €".encode()
    for i in range(len(data)):
        buffer.feed(data[i:i + 1])
    buffer.close()
    assert buffer.text() == "héllo €"


def test_invalid_utf8_is_replaced() -> None:
    buffer = OutputBuffer()
    buffer.feed(b"ok \xff\xfe end")
    buffer.close()
    assert buffer.text() == "ok \ufffd\ufffd end"


def test_incomplete_trailing_character_becomes_a_replacement_at_close() -> None:
    buffer = OutputBuffer()
    buffer.feed("€".encode()[:2])
    assert buffer.text() == ""
    buffer.close()
    assert buffer.text() == "\ufffd"


def test_output_past_the_cap_is_cut_with_one_marker_and_never_shrinks() -> None:
    buffer = OutputBuffer(cap_bytes=10)
    buffer.feed(b"0123456")
    first = buffer.text()
    buffer.feed(b"789abcdef")
    buffer.feed(b"more and more")
    buffer.close()
    text = buffer.text()
    assert text.startswith(first)
    assert text == "0123456789" + truncation_marker(10)
    assert buffer.truncated and buffer.bytes_kept == 10


def test_marker_names_mebibytes() -> None:
    assert "16 MiB" in truncation_marker(16 * 1024 * 1024)


def test_text_is_cumulative() -> None:
    buffer = OutputBuffer()
    buffer.feed(b"a")
    assert buffer.text() == "a"
    buffer.feed(b"b")
    buffer.feed(b"c")
    assert buffer.text() == "abc"
    assert len(buffer) == 3
