"""core/dotenv.py: names, and .env text as people write it (and get it wrong)."""

from __future__ import annotations

import pytest

from qbox.core.dotenv import Rejection, key_problem, parse, value_problem


def test_plain_export_comments_and_blank_lines() -> None:
    text = "# settings\n\nA=1\nexport B=two\n   \n  # indented comment\nC = spaced value  \n"
    result = parse(text)
    assert result.envs == {"A": "1", "B": "two", "C": "spaced value"}
    assert result.skipped == 4 and result.rejected == []


def test_inline_comments_only_after_whitespace_of_unquoted_values() -> None:
    result = parse("A=value # a comment\nB=a#b\nC=#not-a-comment\nD= # only a comment\nE=x\t# tab\n")
    assert result.envs == {"A": "value", "B": "a#b", "C": "#not-a-comment", "D": "", "E": "x"}


def test_single_quotes_are_literal() -> None:
    result = parse("A='a \\n $HOME # kept'\nB='it''s'\nC=''\n")
    assert result.envs["A"] == "a \\n $HOME # kept"
    assert result.envs["C"] == ""
    # 'it''s' is a quote, then text after it: refused, not guessed at.
    assert result.rejected == [Rejection(2, "unexpected text after the closing quote", "B")]


def test_double_quotes_know_their_escapes() -> None:
    result = parse('A="line1\\nline2"\nB="say \\"hi\\""\nC="back\\\\slash"\nD="tab\\there"\n'
                   'E="\\q stays"\nF="x" # comment after the quote\n')
    assert result.envs == {"A": "line1\nline2", "B": 'say "hi"', "C": "back\\slash",
                           "D": "tab\there", "E": "\\q stays", "F": "x"}
    assert result.rejected == []


def test_quoted_values_span_lines() -> None:
    text = 'KEY="-----BEGIN-----\nabc\n-----END-----"\nNEXT=1\nS=\'a\nb\'\n'
    result = parse(text)
    assert result.envs == {"KEY": "-----BEGIN-----\nabc\n-----END-----", "NEXT": "1", "S": "a\nb"}
    assert result.rejected == []


def test_crlf_is_read_as_lf() -> None:
    result = parse('A=1\r\nB="x\r\ny"\r\n# c\r\n\r\nC=3\r\n')
    assert result.envs == {"A": "1", "B": "x\ny", "C": "3"}
    assert result.skipped == 2


def test_bad_lines_are_rejected_with_their_numbers_and_the_rest_applies() -> None:
    text = ("GOOD=1\n"           # 1
            "no equals here\n"   # 2
            "1BAD=x\n"           # 3
            "BAD-DASH=x\n"       # 4
            "QBOX_TOKEN=x\n"     # 5
            "qbox_lower=x\n"     # 6
            "=novalue\n"         # 7
            'OPEN="never closed\n'  # 8
            "AFTER=2\n")         # 9
    result = parse(text)
    assert result.envs == {"GOOD": "1", "AFTER": "2"}
    by_line = {r.line: r for r in result.rejected}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert by_line[2].key is None and "=" in by_line[2].reason
    assert by_line[3].key == "1BAD" and "invalid name" in by_line[3].reason
    assert by_line[5].key == "QBOX_TOKEN" and "reserved" in by_line[5].reason
    assert by_line[6].key == "qbox_lower" and "reserved" in by_line[6].reason
    assert by_line[8] == Rejection(8, "unterminated quoted value", "OPEN")


def test_an_unterminated_quote_does_not_swallow_the_lines_after_it() -> None:
    result = parse('A="open\nB=1\nC=2\n')
    assert result.envs == {"B": "1", "C": "2"}
    assert [r.line for r in result.rejected] == [1]


def test_nul_is_rejected() -> None:
    result = parse("A=x\0y\nB=\"a\nb\0\"\nC=ok\n")
    assert result.envs == {"C": "ok"}
    # Line 3 (the quote's would-be end) is read again on its own, and has the NUL too.
    assert [r.line for r in result.rejected] == [1, 2, 3]
    assert "NUL" in result.rejected[0].reason


def test_duplicates_last_wins() -> None:
    result = parse("A=1\nB=x\nA=2\n")
    assert result.envs == {"B": "x", "A": "2"}
    assert list(result.envs) == ["B", "A"]


def test_empty_text_and_values() -> None:
    assert parse("").envs == {} and parse("").skipped == 0
    result = parse("A=\nB=   \nexport C=\n")
    assert result.envs == {"A": "", "B": "", "C": ""}


def test_export_needs_whitespace_and_is_otherwise_a_key() -> None:
    result = parse("exportX=1\nexport=2\nexport\tY=3\n")
    assert result.envs == {"exportX": "1", "export": "2", "Y": "3"}


def test_a_long_key_is_refused_without_echoing_it() -> None:
    result = parse("K" * 300 + "=1\n")
    assert result.envs == {} and result.rejected[0].key is None


@pytest.mark.parametrize("key", ["A", "_", "a_b", "PATH", "X1", "MY_API_KEY"])
def test_good_keys(key: str) -> None:
    assert key_problem(key) is None


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A=B", "Ä", "QBOX_X", "Qbox_y", "A\0"])
def test_bad_keys(key: str) -> None:
    assert key_problem(key) is not None


def test_value_problem() -> None:
    assert value_problem("any\ntext ✓") is None
    assert value_problem("a\0b") is not None
