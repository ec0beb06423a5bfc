"""Evaluation sets read from local JSONL files, one JSON object per line; errors start with `file:line:`.

Formats (other keys on a row are kept in `meta`):
  * AIME-style (`read_aime`): `{"problem": str, "answer": str | int}`; the gold is the answer as a string.
  * GPQA-style (`read_gpqa`): `{"question": str, "correct_answer": str, "incorrect_answers": [str, str, str]}`
    (the original's columns), or `{"question": str, "choices": [4 x str], "label": int}` (or `"answer"`: a letter
    or the text of the correct choice). As the authors prepare GPQA (docs/method.md A): one `random.Random(seed)`
    (seed 42) shuffles each row's `[correct, incorrect 1, 2, 3]` (or its `choices`) in place, row after row in file
    order; the prompt is the stripped question, a blank line, `Choices:`, then `A: ...` to `D: ...` (each choice
    stripped); the gold is the letter the correct choice landed on. A given file and seed always give the same
    order.
  * chat (`read_chat`): `{"messages": [...]}` as in training data (`bitune_jax.data.records`); the last assistant
    message is the reference. The gold is the row's `"answer"` if present, else the reference's last `\\boxed{}`.
  * multiple choice (`read_mc`), one shape for PIQA/ARC/CSQA/SIQA/MMLU-style items:
    `{"question": str, "choices": [str, ...], "label": int}`; `"context"` may replace or precede `"question"`
    (SIQA-style: the prompt text is `context + "\\n" + question`); `"answer": "B"` (a letter) may replace `"label"`.
    At least two choices, all non-empty strings.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
import re
import string
from collections.abc import Mapping
from typing import Any

from bitune_jax.data.records import DataError, Message, jsonl_rows, record_from_row
from bitune_jax.eval.answers import last_boxed

LETTERS = string.ascii_uppercase
GPQA_SEED = 42


@dataclasses.dataclass(frozen=True)
class ReasoningItem:
    """One generation question: the prompt messages (no answer-format suffix yet), the gold answer, its origin."""

    messages: list[Message]
    answer: str
    kind: str  # "aime", "gpqa" or "chat": picks the default prompt suffix
    file: str
    line: int
    reference: str | None = None  # chat rows: the reference assistant message
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass(frozen=True)
class MCItem:
    """One multiple-choice item: the prompt text, the choices, the index of the correct one."""

    question: str
    choices: tuple[str, ...]
    label: int
    file: str
    line: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def row_field(row: Mapping[str, Any], key: str, where: str, types: type | tuple[type, ...] = str) -> Any:
    """`row[key]`, of `types` and (a string) not blank; otherwise a `DataError` naming `where` and the key."""
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}; the row has keys {sorted(row)}")
    value = row[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise DataError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def string_list(row: Mapping[str, Any], key: str, where: str, n: int | None = None, min_n: int = 1) -> list[str]:
    values = row_field(row, key, where, list)
    if n is not None and len(values) != n:
        raise DataError(f"{where}: field {key!r} must hold {n} strings, got {len(values)}")
    if len(values) < min_n:
        raise DataError(f"{where}: field {key!r} must hold at least {min_n} strings, got {len(values)}")
    if len(values) > len(LETTERS):
        raise DataError(f"{where}: field {key!r} holds {len(values)} choices; at most {len(LETTERS)} have letters")
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise DataError(f"{where}: {key}[{i}] must be a non-empty string, got {v!r}")
    return values


def distinct_choices(choices: list[str], where: str) -> list[str]:
    """Two equal choices make the gold letter ambiguous."""
    seen: dict[str, int] = {}
    for i, c in enumerate(choices):
        if c.strip() in seen:
            raise DataError(f"{where}: choices {seen[c.strip()]} and {i} are the same text {c.strip()!r}")
        seen[c.strip()] = i
    return choices


def _meta(row: Mapping[str, Any], consumed: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in consumed}


def _label(row: Mapping[str, Any], choices: list[str], where: str, accept_text: bool = False) -> int:
    """The correct choice's index from `"label"` (int) or `"answer"` (a letter, or with `accept_text` the text)."""
    if "label" in row:
        label = row_field(row, "label", where, int)
        if not 0 <= label < len(choices):
            raise DataError(f"{where}: label {label} is out of range for {len(choices)} choices")
        if "answer" in row and _answer_index(row["answer"], choices, where, accept_text) != label:
            raise DataError(f"{where}: 'label' ({label}) and 'answer' ({row['answer']!r}) disagree")
        return label
    if "answer" in row:
        return _answer_index(row["answer"], choices, where, accept_text)
    raise DataError(f"{where}: missing field 'label' (the correct choice's index) or 'answer' (its letter)")


def _answer_index(answer: Any, choices: list[str], where: str, accept_text: bool) -> int:
    if isinstance(answer, str):
        letter = answer.strip()
        if len(letter) == 1 and letter.upper() in LETTERS[: len(choices)]:
            return LETTERS.index(letter.upper())
        if accept_text and answer in choices:
            return choices.index(answer)
    allowed = "a letter A-" + LETTERS[len(choices) - 1] + (" or the text of a choice" if accept_text else "")
    raise DataError(f"{where}: field 'answer' must be {allowed}, got {answer!r}")


def read_aime(path: str | pathlib.Path) -> list[ReasoningItem]:
    """AIME-style rows `{"problem", "answer"}`; an integer answer becomes its decimal string."""
    items = []
    for file, line, row in jsonl_rows(path):
        where = f"{file}:{line}"
        problem = row_field(row, "problem", where)
        answer = row_field(row, "answer", where, (str, int))
        if re.search(r"\\boxed\s*\{", str(answer)):
            raise DataError(
                f"{where}: field 'answer' is {answer!r}; write the gold answer bare (the grader compares it with what "
                "the model writes inside \\boxed{}, so a boxed gold can never match)"
            )
        items.append(
            ReasoningItem(
                messages=[{"role": "user", "content": problem}],
                answer=str(answer).strip(),
                kind="aime",
                file=file,
                line=line,
                meta=_meta(row, ("problem", "answer")),
            )
        )
    return items


def format_choices(question: str, choices: list[str]) -> str:
    """The authors' GPQA query: the stripped question, a blank line, `Choices:`, then `A: ...` one choice a line."""
    return question.strip() + "\n\nChoices:" + "".join(f"\n{LETTERS[i]}: " + c.strip() for i, c in enumerate(choices))


def read_gpqa(path: str | pathlib.Path, seed: int = GPQA_SEED) -> list[ReasoningItem]:
    """GPQA-style rows; the choices are shuffled as the authors do (see the module docstring)."""
    rng = random.Random(seed)
    items = []
    for file, line, row in jsonl_rows(path):
        where = f"{file}:{line}"
        question = row_field(row, "question", where)
        if "choices" in row:
            choices = string_list(row, "choices", where, n=4)
            correct = choices[_label(row, choices, where, accept_text=True)]
            consumed = ("question", "choices", "label", "answer")
        elif "correct_answer" in row or "incorrect_answers" in row:
            correct = row_field(row, "correct_answer", where)
            choices = [correct, *string_list(row, "incorrect_answers", where, n=3)]
            consumed = ("question", "correct_answer", "incorrect_answers")
        else:
            raise DataError(
                f"{where}: missing field: a GPQA row needs 'choices' (4) with 'label', or "
                f"'correct_answer' and 'incorrect_answers' (3); the row has keys {sorted(row)}"
            )
        shuffled = list(distinct_choices(choices, where))
        rng.shuffle(shuffled)  # the authors: random.seed(42) once, then random.shuffle per row
        gold = LETTERS[shuffled.index(correct)]
        items.append(
            ReasoningItem(
                messages=[{"role": "user", "content": format_choices(question, shuffled)}],
                answer=gold,
                kind="gpqa",
                file=file,
                line=line,
                meta={**_meta(row, consumed), "choices": shuffled},
            )
        )
    return items


def read_chat(path: str | pathlib.Path) -> list[ReasoningItem]:
    """Chat rows (`messages`, last assistant = reference); the gold is `"answer"` or the reference's last box."""
    items = []
    for file, line, row in jsonl_rows(path):
        where = f"{file}:{line}"
        if "messages" not in row:
            raise DataError(f"{where}: missing field 'messages'; the row has keys {sorted(row)}")
        record = record_from_row(row, file, line)
        meta = dict(record.meta)
        if "answer" in meta:
            gold = str(row_field(meta, "answer", where, (str, int))).strip()  # null or empty: an error
            meta.pop("answer")
        else:
            gold = last_boxed(record.response)
            if gold is None:
                raise DataError(
                    f"{where}: no gold answer: add an 'answer' field or end the reference with \\boxed{{...}}"
                )
            if not gold.strip():
                raise DataError(
                    f"{where}: the reference's last \\boxed{{}} is empty, so it cannot be the gold "
                    "answer; add an 'answer' field"
                )
        items.append(
            ReasoningItem(
                messages=record.prompt_messages,
                answer=gold,
                kind="chat",
                file=file,
                line=line,
                reference=record.response,
                meta=meta,
            )
        )
    return items


def read_mc(path: str | pathlib.Path) -> list[MCItem]:
    """Multiple-choice rows (schema in the module docstring)."""
    items = []
    for file, line, row in jsonl_rows(path):
        where = f"{file}:{line}"
        parts = [row_field(row, key, where) for key in ("context", "question") if key in row]
        if not parts:
            raise DataError(f"{where}: missing field 'question' (or 'context'); the row has keys {sorted(row)}")
        choices = distinct_choices(string_list(row, "choices", where, min_n=2), where)
        label = _label(row, choices, where)
        items.append(
            MCItem(
                question="\n".join(parts),
                choices=tuple(choices),
                label=label,
                file=file,
                line=line,
                meta=_meta(row, ("context", "question", "choices", "label", "answer")),
            )
        )
    return items
