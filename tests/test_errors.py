"""`lungsound.errors.one_line`: the one rule that turns a library's exception (or a message) into the line an error or a
report quotes."""

from __future__ import annotations

from lungsound.errors import one_line


def test_the_first_non_empty_line_stripped():
    assert one_line(RuntimeError("\n  database is locked  \n(Background on this error at: https://sqlalche.me)")) \
        == "database is locked"
    assert one_line("  first\nsecond") == "first"


def test_an_exception_without_a_message_gives_its_type_name():
    assert one_line(EOFError()) == "EOFError"
    assert one_line(EOFError(), with_type=True) == "EOFError"
    assert one_line(KeyError("run")) == "'run'"  # str() of the exception, as every caller printed it
    assert one_line("   \n ") == ""


def test_with_type_names_the_exception_first():
    assert one_line(ConnectionError("[Errno -3] Temporary failure\nmore"), with_type=True) \
        == "ConnectionError: [Errno -3] Temporary failure"


def test_the_limit_cuts_the_whole_line_and_none_keeps_it():
    exc = ValueError("x" * 500)
    assert one_line(exc) == "x" * 300
    assert one_line(exc, limit=200) == "x" * 200
    assert one_line(exc, limit=None) == "x" * 500
    assert one_line(exc, limit=10, with_type=True) == "ValueError"


def test_a_preferred_line_is_taken_before_the_first():
    exc = RuntimeError("Error(s) in loading state_dict for AST:\n\tsize mismatch for head.weight: [4, 8] vs [2, 8].")
    assert one_line(exc, prefer=("size mismatch",)) == "size mismatch for head.weight: [4, 8] vs [2, 8]."
    assert one_line(exc, prefer=("no such words",)) == "Error(s) in loading state_dict for AST:"
