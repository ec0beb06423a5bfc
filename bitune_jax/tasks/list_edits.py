"""A synthetic long chain-of-thought task generated here (no download): tracking the state of a list through edits.

A problem: "A list holds these items, in order: apple, cat, dog, egg. Append pear. Cross out cat. Swap the first two
items. ... What is the list at the end?", a start list of 4-6 distinct words and `k` edits drawn from five operations:
append X, remove X, swap the first two, move the last to the front, reverse (only edits valid for the current list
are drawn, so the list keeps 2..8 distinct words). Two families share the procedure and differ in the story: "list"
(items on a list, common nouns) and "queue" (people in a queue, first names, edits told as queue events: "Tom joins
the back", "Ann leaves", "the queue turns around"). Each edit is phrased by one of several templates drawn at random.
The response is a reasoning trace that restates the canonical edit and the whole list at every step, each line in
a style drawn at random (`STEP_STYLES`), with a remark now and then (`REMARKS`), then the answer:

    <think>
    Start: [apple, cat, dog, egg]
    1. append pear: [apple, cat, dog, egg, pear]
    Let me be careful here.
    Now remove cat. That gives [apple, dog, egg, pear]
    After step 3 (swap the first two): [dog, apple, egg, pear]
    ...
    </think>

    The answer is \\boxed{egg, apple, dog, pear}.

What it measures: whether supervised fine-tuning on reasoning traces teaches the model to carry a state through `k`
steps on problems it has never seen, scored like AIME (exact match of the last `\\boxed{}`), and how training token
accuracy on the traces (memorization) relates to held-out accuracy as the number of epochs grows.

Why it is a fair toy stand-in for long-CoT SFT, next to the arithmetic task (`arithmetic`): it has the same shape (a
`<think>` trace, then a boxed answer, loss on the response only), a checkable answer, a length knob (`min_steps`,
`max_steps`), a test set disjoint in problem text from the training pool, and a streamed pool (`generate(n)` is a
prefix of `generate(m)` for n < m). Unlike arithmetic, each single step (copy a short list of common one-token words,
with one word added, dropped or moved) needs no knowledge, only attention to the list, so a short warm-up on single
steps can give the model the step-level skill before the study; the repetition study then compares epochs with data
on a task the model can already do piecewise, and SFT shapes the trace (translate each story sentence into a canonical
edit, restate the whole list, never lose a word) rather than teaching a missing skill. The gate is measured, not
assumed: `single_step_items` and `experiments/list_edits_pilot.py`. Measured on the shipped SmolLM2-135M-Instruct
(its 4-bit GGUF) before any warm-up: 1% of 200 single steps right zero-shot, 0.5% 3-shot, so the warm-up is needed.
The two families, the random phrasings of the question and the random styles of the trace keep one epoch from
being learned by rote. With `cot=False` the same
problems come without the trace (the response is only "The answer is \\boxed{...}."). What it does not capture: the
breadth of real math/science reasoning, and traces that branch or backtrack; every trace here is the one procedure
(only its wording varies), and the state is small.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from bitune_jax.data.records import write_jsonl
from bitune_jax.tasks.arithmetic import ANSWER_ONLY_INSTRUCTION, INSTRUCTION
from bitune_jax.tasks.list_edits_wording import (
    _STEP_PATTERNS,
    ENDINGS,
    INTROS,
    REMARKS,
    SINGLE_STEP,
    START_STYLES,
    STEP_STYLES,
    TEMPLATES,
    TRACE,
    WORDS,
)
from bitune_jax.tasks.problem_stream import StepsTask

__all__ = [
    "generate",
    "train_test_split",
    "split",
    "write_jsonl",
    "solve",
    "single_step_items",
    "parse_list",
    "format_list",
    "INSTRUCTION",
    "ANSWER_ONLY_INSTRUCTION",
    "FAMILIES",
    "OPS",
    "TEMPLATES",
    "TRACE",
    "STEP_STYLES",
    "REMARKS",
    "START_STYLES",
    "trace_steps",
]

MIN_LEN, MAX_LEN = 2, 8  # every list in a problem keeps this many words
START_LEN = (4, 6)  # the start list's length range
FAMILIES = ("list", "queue")
OPS = ("append", "remove", "swap", "last_to_front", "reverse")
# Edits that change which words are on the list are drawn twice as often as the three reorderings, which would
# otherwise make up 3/5 of the edits (and often cancel: reverse, reverse).
OP_WEIGHTS = {"append": 2.0, "remove": 2.0, "swap": 1.0, "last_to_front": 1.0, "reverse": 1.0}
TAKES_ARG = {"append": True, "remove": True, "swap": False, "last_to_front": False, "reverse": False}
REMARK_P = 0.3  # the chance of a remark before each step


def format_list(words: Sequence[str]) -> str:
    """The words comma+space separated: the boxed answer's form, and inside brackets the trace's."""
    return ", ".join(words)


def _apply(words: list[str], op: str, x: str | None) -> list[str]:
    """One edit; raises on an edit that is invalid for `words`, so a corrupt problem cannot pass silently."""
    if TAKES_ARG.get(op) is None:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
    if TAKES_ARG[op] == (x is None):
        raise ValueError(f"op {op!r} {'needs' if TAKES_ARG[op] else 'takes no'} argument, got {x!r}")
    if op == "append":
        if x in words:
            raise ValueError(f"cannot append {x!r}: already in {words}")
        return [*words, x]
    if op == "remove":
        if x not in words:
            raise ValueError(f"cannot remove {x!r}: not in {words}")
        return [w for w in words if w != x]
    if len(words) < 2:
        raise ValueError(f"op {op!r} needs at least two words, got {words}")
    if op == "swap":
        return [words[1], words[0], *words[2:]]
    if op == "last_to_front":
        return [words[-1], *words[:-1]]
    return words[::-1]


def solve(start: Sequence[str], ops: Sequence[Sequence]) -> list[list[str]]:
    """The lists after each edit, `[after op 1, ..., after op k]`: the ground truth the trace and answer must match.

    `ops` holds `(op, arg)` pairs, `arg` None for the edits that take none (`swap`, `last_to_front`, `reverse`).
    """
    words, out = list(start), []
    for op, x in ops:
        words = _apply(words, op, x)
        out.append(words)
    return out


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _valid_ops(words: Sequence[str], vocab: Sequence[str]) -> list[str]:
    """Edits that keep the list within MIN_LEN..MAX_LEN distinct words; the other three are always valid."""
    ok = {"append": len(words) < MAX_LEN and len(words) < len(vocab), "remove": len(words) > MIN_LEN}
    return [op for op in OPS if ok.get(op, True)]


def _draw_op(rng: np.random.Generator, words: Sequence[str], vocab: Sequence[str], op: str | None = None):
    """A random valid edit (valid operations weighted by OP_WEIGHTS), or a random argument for the given `op`."""
    if op is None:
        allowed = _valid_ops(words, vocab)
        weights = np.asarray([OP_WEIGHTS[o] for o in allowed], np.float64)
        op = allowed[int(rng.choice(len(allowed), p=weights / weights.sum()))]
    if op == "append":
        return op, _pick(rng, [w for w in vocab if w not in words])
    if op == "remove":
        return op, _pick(rng, list(words))
    return op, None


def _sentence(rng: np.random.Generator, family: str, op: str, x: str | None) -> str:
    return _pick(rng, TEMPLATES[family][op]).format(x=x)


def _trace_lines(rng: np.random.Generator, start: Sequence[str], ops: Sequence, lists: Sequence) -> list[str]:
    """The trace: the start list, then per edit `i` (1-based) an optional remark and the canonical edit with the
    whole list after it, each line in a style drawn at random."""
    lines = [_pick(rng, START_STYLES).format(items=format_list(start))]
    for i, ((op, x), after) in enumerate(zip(ops, lists, strict=True), 1):
        if rng.random() < REMARK_P:
            lines.append(_pick(rng, REMARKS).format(n=len(lists[i - 2]) if i > 1 else len(start)))
        lines.append(_pick(rng, STEP_STYLES).format(i=i, edit=TRACE[op].format(x=x), after=format_list(after)))
    return lines


def trace_steps(response: str) -> list[tuple[str, list[str]]]:
    """`(canonical edit, list after it)` for every step line of a trace, in order (remarks and other lines skipped):
    how far a generated trace kept the state right, step by step."""
    out = []
    for line in response.split("\n"):
        for pattern in _STEP_PATTERNS:
            m = pattern.match(line.strip())
            if m:
                out.append((m["edit"], [w.strip() for w in m["after"].split(",")] if m["after"].strip() else []))
                break
    return out


def steps_right(meta: dict, response: str) -> tuple[int, int]:
    """How many edits of a generated trace restate the list right before its first wrong one, of how many the
    problem (`Record.meta`: its `start` and `ops`) has: where a wrong answer went wrong."""
    gold = solve(meta["start"], meta["ops"])
    steps = [after for _, after in trace_steps(response)]
    k = next((i for i, (got, want) in enumerate(zip(steps, gold)) if got != want), min(len(steps), len(gold)))
    return k, len(gold)


def _problem(rng: np.random.Generator, min_steps: int, max_steps: int, cot: bool = True) -> dict:
    family = _pick(rng, FAMILIES)
    vocab = WORDS[family]
    steps = int(rng.integers(min_steps, max_steps + 1))
    n_start = int(rng.integers(START_LEN[0], START_LEN[1] + 1))
    start = [vocab[i] for i in rng.choice(len(vocab), n_start, replace=False)]
    ops, words = [], start
    for _ in range(steps):
        op, x = _draw_op(rng, words, vocab)
        ops.append((op, x))
        words = _apply(words, op, x)
    lists = solve(start, ops)
    events = " ".join(_sentence(rng, family, op, x) for op, x in ops)
    intro = _pick(rng, INTROS[family]).format(items=format_list(start))
    question = f"{intro} {events} {_pick(rng, ENDINGS[family])}"
    lines = _trace_lines(rng, start, ops, lists)
    answer = format_list(lists[-1])
    boxed = f"The answer is \\boxed{{{answer}}}."
    response = "<think>\n" + "\n".join(lines) + "\n</think>\n\n" + boxed if cot else boxed
    return {
        "family": family,
        "question": question,
        "response": response,
        "answer": answer,
        "start": start,
        "ops": [[op, x] for op, x in ops],
        "steps": steps,
    }


# A record's meta: `family`, `answer` (the final list as "a, b, c"), `start`, `ops` ([op, arg or None] pairs), `steps`,
# `question`; `solve(start, ops)` recomputes the answer.
TASK = StepsTask(
    _problem,
    task="list_edits",
    name="list_edits",
    instructions=(INSTRUCTION, ANSWER_ONLY_INSTRUCTION),
    steps=(8, 12),
    stream="list_edits",
)
generate = TASK.generate
train_test_split = TASK.train_test_split
split = TASK.split


def single_step_items(n: int, *, seed: int, min_len: int = MIN_LEN, max_len: int = MAX_LEN) -> list[dict]:
    """`n` one-edit questions for the pilot gate: can the untrained model already do one step of the trace?

    Item `i` has family `FAMILIES[i % 2]` and op `OPS[(i // 2) % 5]`, so every (family, op) pair is equally
    represented in any multiple of ten items; the list (`min_len..max_len` distinct words before and after the edit,
    by default the bounds a problem's lists keep) and the phrasing are random. Each item: `family`, `op`, `arg`,
    `words` (the list before), `after` (the list after, from `solve`), `edit` (the sentence), `prompt` and `gold`
    (the list after, in brackets). A narrower `max_len` measures whether shorter lists make single steps doable.
    """
    if not MIN_LEN <= min_len < max_len <= MAX_LEN:
        raise ValueError(f"need {MIN_LEN} <= min_len < max_len <= {MAX_LEN}, got min_len={min_len}, max_len={max_len}")
    rng = np.random.default_rng([seed, 2])
    items = []
    for i in range(n):
        family, op = FAMILIES[i % len(FAMILIES)], OPS[(i // len(FAMILIES)) % len(OPS)]
        vocab = WORDS[family]
        lo, hi = min_len + (op == "remove"), max_len - (op == "append")
        length = int(rng.integers(lo, hi + 1))
        words = [vocab[j] for j in rng.choice(len(vocab), length, replace=False)]
        op, x = _draw_op(rng, words, vocab, op)
        after = solve(words, [(op, x)])[-1]
        edit = _sentence(rng, family, op, x)
        prompt = SINGLE_STEP[family].format(items=format_list(words), edit=edit)
        items.append(
            {
                "family": family,
                "op": op,
                "arg": x,
                "words": words,
                "after": after,
                "edit": edit,
                "prompt": prompt,
                "gold": f"[{format_list(after)}]",
            }
        )
    return items


# `\boxed{...}` without nested braces (a list answer has none), last one wins, as `eval.answers.last_boxed` would
# find it. Kept local: `eval` imports `data`, so `data` must not import `eval`.
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_BRACKETED = re.compile(r"\[([^\[\]\n]*)\]")


def parse_list(text: str) -> list[str] | None:
    """The list a model's output gives: the last `\\boxed{a, b, c}` if there is one (a full problem's answer),
    else the first `[a, b, c]` (a single-step answer); None when neither is found or an element is empty.

    Elements are stripped of whitespace and quotes; nothing else is normalized (case and spelling must match).
    """
    boxes = _BOXED.findall(text)
    if boxes:
        content = boxes[-1].strip()
        if content.startswith("[") and content.endswith("]"):
            content = content[1:-1]
    else:
        m = _BRACKETED.search(text)
        if m is None:
            return None
        content = m[1]
    if not content.strip():
        return []
    words = [w.strip().strip("'\"`").strip() for w in content.split(",")]
    return None if any(not w for w in words) else words
