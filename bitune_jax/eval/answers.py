"""Final-answer extraction from generated text (docs/method.md A and C): the last `\\boxed{...}`, exact match.

Two extractors are kept side by side so a report can show both:
  * `last_boxed`: the last *complete* `\\boxed{...}` with nested braces balanced, so `\\boxed{\\frac{1}{2}}` gives
    `\\frac{1}{2}`. This project's default.
  * `last_boxed_original`: the authors' regex `\\boxed\\s*\\{([^{}]*)\\}` (last match, no nesting). A box with
    braces inside never matches (`\\boxed{\\frac{1}{2}}` gives None), so their numbers can differ from ours on
    such answers.
For AIME integers and GPQA letters the two agree; they part only on LaTeX answers.
"""

from __future__ import annotations

import re

ORIGINAL_PATTERN = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_BOX_START = re.compile(r"\\boxed\s*\{")


def _balanced_group(text: str, start: int) -> int | None:
    """Index of the `}` closing the `{` just before `start`, or None when the text ends first (a truncated box).

    Backslash-escaped braces (`\\{`, `\\}`) are literal characters in LaTeX and do not count.
    """
    depth, i = 1, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (`\{`, `\}`, `\\`, or the first letter of a command)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def all_boxed(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` (nested braces balanced; `\\boxed {x}` allowed), in text order."""
    found = []
    for m in _BOX_START.finditer(text):
        end = _balanced_group(text, m.end())
        if end is not None:
            found.append(text[m.end() : end])
    return found


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` (the one that starts last), or None if there is none.

    "Complete" matters for generations cut off by the token budget: an unclosed `\\boxed{12` is not an answer.
    A box nested inside another (`\\boxed{\\boxed{1}}`) starts last, so the inner content wins.
    """
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


def last_boxed_original(text: str) -> str | None:
    """The authors' extraction: the last match of `\\boxed\\s*\\{([^{}]*)\\}`, no nesting, no stripping."""
    matches = ORIGINAL_PATTERN.findall(text)
    return matches[-1] if matches else None


def is_correct(pred: str | None, gold: str) -> bool:
    """Exact string match after stripping surrounding whitespace from both sides; no other normalization.

    `" 42 "` matches `"42"`, but `"042"`, `"42.0"` and `"\\text{42}"` do not. The authors compare with `==` and do
    not strip (`is_correct_original`); for boxed integers and letters the strip rarely matters.
    """
    return pred is not None and pred.strip() == gold.strip()


def is_correct_original(pred: str | None, gold: str) -> bool:
    """The authors' comparison: `pred == gold`, nothing normalized."""
    return pred is not None and pred == gold
