"""MMLU as the repetition paper measures forgetting (docs/method.md A): nothing is generated.

Each test question is asked after `shots` solved questions of its subject from the dev split, as chat turns (the
user asks, the assistant answers `\\boxed{X}`); the conversation is rendered with the model's template, the
generation prompt and thinking off, and `\\boxed{` is appended. The prediction is the letter among A-D whose first
token is most probable next. Scored per subject, then macro-averaged over subjects (the authors' headline).

Rows are local JSONL in the public dataset's layout (cais/mmlu): `{"question": str, "choices": [4 x str],
"answer": 0-3, "subject": str}`, one file for the test split and one for the dev split (few-shot examples).
"""

from __future__ import annotations

import dataclasses
import pathlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from bitune_jax.chat import render_chat
from bitune_jax.data.batch import PromptBatch
from bitune_jax.data.records import DataError, jsonl_rows

LETTERS = "ABCD"


@dataclasses.dataclass(frozen=True)
class MMLUItem:
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index of the correct choice
    subject: str
    where: str  # file:line


def read_mmlu(path: str | pathlib.Path) -> list[MMLUItem]:
    """Rows in cais/mmlu's layout. Empty questions or choices are refused; rows whose choices repeat a text are
    kept (the published test set may hold some, and the eval must stay the authors') but counted in a warning."""
    items, repeated = [], []
    for file, line, row in jsonl_rows(path):
        where = f"{file}:{line}"
        for key in ("question", "choices", "answer", "subject"):
            if key not in row:
                raise DataError(f"{where}: missing field {key!r}; the row has keys {sorted(row)}")
        choices, answer = row["choices"], row["answer"]
        if not isinstance(choices, list) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: field 'choices' must hold 4 strings, got {choices!r}")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise DataError(f"{where}: field 'answer' must be the correct choice's index 0-3, got {answer!r}")
        if not isinstance(row["question"], str) or not isinstance(row["subject"], str) or not row["subject"]:
            raise DataError(f"{where}: fields 'question' and 'subject' must be strings (subject non-empty)")
        if not row["question"].strip():
            raise DataError(f"{where}: field 'question' is empty")
        if empty := [i for i, c in enumerate(choices) if not c.strip()]:
            raise DataError(f"{where}: choices[{empty[0]}] is empty")
        if len({c.strip() for c in choices}) < 4:
            repeated.append(where)
        items.append(MMLUItem(row["question"], tuple(choices), answer, row["subject"], where))
    if repeated:
        warnings.warn(f"{len(repeated)} MMLU rows list the same choice text twice (first: {repeated[0]})", stacklevel=2)
    return items


def _query(item: MMLUItem) -> str:
    """The authors' user turn (their mmlu.py `template`)."""
    listed = "\n".join(f"{LETTERS[i]}: {c}" for i, c in enumerate(item.choices))
    return f"{item.question}\nAnswer with the letter enclosed in \\boxed{{}}.\n\nChoices:\n{listed}"


def mmlu_prompt(tok, item: MMLUItem, shots: Sequence[MMLUItem]) -> str:
    messages: list[dict[str, str]] = []
    for shot in shots:
        messages += [
            {"role": "user", "content": _query(shot)},
            {"role": "assistant", "content": "\\boxed{" + LETTERS[shot.answer] + "}"},
        ]
    messages.append({"role": "user", "content": _query(item)})
    return render_chat(tok, messages, add_generation_prompt=True, enable_thinking=False) + "\\boxed{"


def letter_ids(tok) -> list[int]:
    """The first token of each of "A".."D" encoded alone (as the authors take `tokenizer.encode(letter)[0]`, here
    without a BOS)."""
    return [tok.encode(letter, add_bos=False)[0] for letter in LETTERS]


def check_shots(test: Sequence[MMLUItem], dev: Sequence[MMLUItem], shots: int) -> None:
    """Every test subject has `shots` dev rows (checked before a model is loaded, by the trainer)."""
    counts: dict[str, int] = {}
    for item in dev:
        counts[item.subject] = counts.get(item.subject, 0) + 1
    for item in test:
        if counts.get(item.subject, 0) < shots:
            raise DataError(
                f"{item.where}: subject {item.subject!r} has {counts.get(item.subject, 0)} dev rows, fewer than "
                f"shots={shots}"
            )


def evaluate_mmlu(
    lm, test: Sequence[MMLUItem], dev: Sequence[MMLUItem], *, shots: int = 5, batch_size: int = 8
) -> dict[str, Any]:
    """Per-subject accuracy, its macro average over subjects, and the accuracy over all questions."""
    tok = lm.tokenizer
    if tok is None:
        raise ValueError("MMLU renders chat prompts; load the model with its tokenizer")
    check_shots(test, dev, shots)
    by_subject: dict[str, list[MMLUItem]] = {}
    for item in dev:
        by_subject.setdefault(item.subject, []).append(item)
    ids = letter_ids(tok)
    prompts = [
        tok.encode(mmlu_prompt(tok, item, by_subject.get(item.subject, [])[:shots]), add_bos=False) for item in test
    ]
    correct = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]
        logits = np.asarray(lm.logits(*PromptBatch.pad(rows, lm.pad_id, "right")))
        for r, p in enumerate(rows):
            letters = logits[r, len(p) - 1, ids]  # softmax is monotone: the argmax of the four logits
            item = test[start + r]
            correct.append(bool(letters[item.answer] == letters.max()))  # a tie counts, as in the authors' code
    subjects: dict[str, list[bool]] = {}
    for item, ok in zip(test, correct):
        subjects.setdefault(item.subject, []).append(ok)
    per_subject = {s: float(np.mean(v)) for s, v in sorted(subjects.items())}
    return {
        "mmlu_macro": float(np.mean(list(per_subject.values()))),
        "mmlu_micro": float(np.mean(correct)),
        "per_subject": per_subject,
        "correct": correct,
    }
