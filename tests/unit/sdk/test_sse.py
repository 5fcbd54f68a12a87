"""The code-execute event-stream parser (WIRE_PROTOCOL.md §5.1), fed bytes as they might arrive."""

from __future__ import annotations

from typing import Any

import pytest

from qbox.sdk._sse import SseParser


def parse(*chunks: bytes) -> list[Any]:
    parser = SseParser()
    payloads: list[Any] = []
    for chunk in chunks:
        payloads += parser.feed(chunk)
    return payloads + parser.close()


def bytewise(data: bytes) -> list[Any]:
    return parse(*(data[i : i + 1] for i in range(len(data))))


def test_frames_as_the_server_sends_them() -> None:
    data = b'event: started\ndata: {"kind":"started"}\n\nevent: complete\ndata: {"kind":"complete"}\n\n'
    assert parse(data) == [{"kind": "started"}, {"kind": "complete"}]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(newline: bytes) -> None:
    data = b"data: 1" + newline + newline + b"data: 2" + newline + newline
    assert parse(data) == [1, 2]
    assert bytewise(data) == [1, 2]


def test_a_crlf_split_between_chunks_is_one_line_break() -> None:
    # Read as two breaks, the \r\n would end the frame after its first data line.
    assert parse(b'data: {"a":\r', b'\ndata: 1}\r\n\r\n') == [{"a": 1}]


def test_cr_then_cr_is_two_line_breaks_even_across_chunks() -> None:
    assert parse(b"data: 1\r", b"\rdata: 2\r\r") == [1, 2]


def test_frames_are_dispatched_as_soon_as_their_blank_line_arrives() -> None:
    parser = SseParser()
    assert parser.feed(b"data: 1\n") == []
    assert parser.feed(b"\n") == [1]
    assert parser.feed(b"data: 2\n\ndata: 3") == [2]
    assert parser.close() == [3]


def test_comments_and_other_fields_are_ignored() -> None:
    data = b": keep-alive\n\nevent: output\nid: 7\nretry: 1000\n: note\ndata: {\"x\": 1}\n\n"
    assert parse(data) == [{"x": 1}]


def test_several_data_lines_are_joined_with_newlines() -> None:
    assert parse(b'data: {"text":\ndata: "a"}\n\n') == [{"text": "a"}]
    assert parse(b'data: "\\n"\n\n') == ["\n"]


def test_one_leading_space_is_stripped_not_more() -> None:
    assert parse(b'data:"a"\n\ndata:  "b"\n\n') == ["a", "b"]


def test_frames_that_are_not_json_are_skipped() -> None:
    assert parse(b"data: nope\n\ndata: {\n\ndata: 2\n\n") == [2]


def test_a_line_without_colon_named_data_is_an_empty_data_line() -> None:
    assert parse(b"data\ndata: 1\n\n") == [1]  # "\n1" is still JSON


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert parse(b"\n\n\n: x\n\nevent: y\n\n") == []


def test_a_final_frame_without_its_blank_line_still_counts() -> None:
    assert parse(b"data: 1\n\ndata: 2") == [1, 2]
    assert parse(b"data: 1\n\ndata: 2\n") == [1, 2]
    assert parse(b"data: 2\r") == [2]


def test_utf8_split_inside_a_character() -> None:
    data = 'data: {"text": "héllo ☃"}\n\n'.encode()
    assert bytewise(data) == [{"text": "héllo ☃"}]


def test_a_leading_byte_order_mark_is_dropped() -> None:
    assert parse(b"\xef\xbb\xbfdata: 1\n\n") == [1]
    assert parse(b"\xef\xbb", b"\xbfdata: 1\n\n") == [1]


def test_an_empty_stream() -> None:
    assert parse() == []
    assert parse(b"") == []
