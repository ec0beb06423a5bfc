"""Last-`\\boxed{}` extraction (ours and the authors' regex) and exact match, on hand-written cases."""

import pytest

from bitune_jax.eval.answers import all_boxed, is_correct, is_correct_original, last_boxed, last_boxed_original

CASES = [
    # (text, last_boxed, last_boxed_original)
    ("The answer is \\boxed{42}.", "42", "42"),
    ("no box here, just 42", None, None),
    ("", None, None),
    ("first \\boxed{1}, then \\boxed{2}, finally \\boxed{3}", "3", "3"),
    ("half: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", None),
    ("deep \\boxed{a{b{c}d}e}", "a{b{c}d}e", None),
    ("\\boxed{1} then nested \\boxed{\\sqrt{2}}", "\\sqrt{2}", "1"),
    ("spaces: \\boxed {7} and \\boxed\n{8}", "8", "8"),
    ("inside: \\boxed{ 12 }", " 12 ", " 12 "),
    ("cut off: \\boxed{5} then \\boxed{12", "5", "5"),
    ("escaped braces \\boxed{\\{1, 2\\}}", "\\{1, 2\\}", None),
    ("letter \\boxed{B}", "B", "B"),
    ("empty \\boxed{}", "", ""),
    ("\\boxed{\\boxed{9}}", "9", "9"),
    ("\\fbox{3} is not \\boxed", None, None),
]


@pytest.mark.parametrize("text,ours,original", CASES)
def test_last_boxed_and_original(text, ours, original):
    assert last_boxed(text) == ours
    assert last_boxed_original(text) == original


def test_all_boxed_in_order():
    assert all_boxed("\\boxed{a} x \\boxed{\\frac{b}{c}} y \\boxed{") == ["a", "\\frac{b}{c}"]


def test_exact_match_strips_whitespace_only():
    assert is_correct(" 12 ", "12") and is_correct("12", "12\n")
    assert not is_correct("012", "12") and not is_correct("12.0", "12") and not is_correct("b", "B")
    assert not is_correct(None, "12")
    assert is_correct_original("12", "12") and not is_correct_original(" 12 ", "12")
    assert not is_correct_original(None, "12")
