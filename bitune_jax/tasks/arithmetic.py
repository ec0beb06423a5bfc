"""A synthetic long chain-of-thought task generated here (no download): multi-step arithmetic word problems.

A problem: "Mia has 12 stickers. Mia buys 7 more stickers. Mia gives 4 stickers to Leo. ... How many stickers does
Mia have at the end?", with `k` events (add, subtract, multiply, divide; every intermediate value an integer in
2..999). The response is a reasoning trace with one line of arithmetic per event, then the answer:

    <think>
    Mia starts with 12 stickers.
    Step 1: Mia buys 7 more stickers, so 12 + 7 = 19.
    ...
    So Mia has 15 stickers at the end.
    </think>

    The answer is \\boxed{15}.

What it measures: whether supervised fine-tuning on reasoning traces teaches the model to carry a quantity through
`k` steps on problems it has never seen, scored like AIME (exact match of the last `\\boxed{}`), and how training
token accuracy on the traces (memorization) relates to held-out accuracy as the number of epochs grows.

Why it is a fair toy stand-in for long-CoT SFT (docs/method.md A): the data has the same shape (a `<think>` trace, then
a boxed final answer, loss on the response only); the answer is checkable without a judge; the trace length is a
knob (`min_steps`, `max_steps`), so "long" can be scaled to what a 135M model on CPU can train on; the test problems
are disjoint from the training pool (no shared problem text), so held-out accuracy cannot come from memorizing a
training problem; and the pool is generated as a stream, so `generate(n)` is a prefix of `generate(m)` for n < m and
nested subsets stay nested. With `cot=False` the same problems come without the trace (the response is only "The
answer is \\boxed{N}."): a short-answer task, where the model must carry the quantity in its head, used for the Bitune
study. What it does not capture: the breadth of real math/science reasoning, and traces that
branch or backtrack; every trace here is the one deterministic procedure.
"""

from __future__ import annotations

import numpy as np

from bitune_jax.data.records import write_jsonl
from bitune_jax.tasks.problem_stream import StepsTask

__all__ = ["generate", "train_test_split", "write_jsonl", "solve", "INSTRUCTION", "ANSWER_ONLY_INSTRUCTION"]

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
ANSWER_ONLY_INSTRUCTION = "Give only the final answer, within \\boxed{}."
CAP = 999  # every value stays in 1..CAP so numbers remain a few tokens long
NAMES = (
    "Mia",
    "Leo",
    "Ava",
    "Noah",
    "Zoe",
    "Omar",
    "Ivy",
    "Liam",
    "Nora",
    "Ethan",
    "Lena",
    "Kai",
    "Ruby",
    "Sam",
    "Maya",
    "Finn",
    "Iris",
    "Owen",
    "Tara",
    "Hugo",
    "Elsa",
    "Ravi",
    "Jade",
    "Theo",
)
ITEMS = (
    "stickers",
    "marbles",
    "apples",
    "coins",
    "books",
    "pencils",
    "stamps",
    "shells",
    "cards",
    "beads",
    "cookies",
    "tickets",
    "buttons",
    "candles",
    "flowers",
    "rocks",
    "toy cars",
    "keys",
    "balloons",
    "feathers",
)
OPS = ("add", "sub", "mul", "div")
OP_WEIGHTS = {"add": 3.0, "sub": 3.0, "mul": 1.0, "div": 1.0}


def solve(start: int, ops: list[tuple[str, int]]) -> list[int]:
    """The running values `[start, v1, ..., vk]` of a problem: the ground truth the trace and answer must match."""
    values = [start]
    for op, x in ops:
        v = values[-1]
        if op == "div" and v % x:
            raise ValueError(f"{v} is not divisible by {x}")
        values.append({"add": v + x, "sub": v - x, "mul": v * x, "div": v // x}[op])
    return values


def _pick(rng: np.random.Generator, options: tuple | list):
    return options[int(rng.integers(len(options)))]


def _draw_op(rng: np.random.Generator, v: int) -> tuple[str, int]:
    """A random event that keeps the running value an integer in 2..CAP (so the trace never says "1 apples").

    Adding and subtracting are drawn three times as often as multiplying and dividing, which would otherwise
    dominate the values.
    """
    divisors = [d for d in (2, 3, 4, 5) if v % d == 0 and v // d >= 2]
    ok = {"add": v < CAP, "sub": v >= 3, "mul": 2 * v <= CAP, "div": bool(divisors)}
    allowed = [op for op in OPS if ok[op]]
    weights = np.asarray([OP_WEIGHTS[op] for op in allowed], np.float64)
    op = allowed[int(rng.choice(len(allowed), p=weights / weights.sum()))]
    if op == "add":
        return op, int(rng.integers(1, min(50, CAP - v) + 1))
    if op == "sub":
        return op, int(rng.integers(1, min(50, v - 2) + 1))
    if op == "mul":
        return op, _pick(rng, [m for m in (2, 3, 4) if m * v <= CAP])
    return op, _pick(rng, divisors)


def _event(op: str, x: int, name: str, item: str, friend: str) -> str:
    """The problem's sentence for one event."""
    if op == "add":
        return f"{name} buys {x} more {item}." if x % 2 else f"{friend} gives {name} {x} {item}."
    if op == "sub":
        return f"{name} gives {x} {item} to {friend}." if x % 2 else f"{name} loses {x} {item}."
    if op == "mul":
        word = {2: "doubles", 3: "triples", 4: "becomes four times as large"}[x]
        return f"The number of {item} that {name} has {word}."
    return f"{name} shares the {item} equally among {x} boxes and keeps one box."


def _step(op: str, x: int, v: int, new: int, name: str, item: str, friend: str) -> str:
    """The trace's line for one event: the event restated, then the arithmetic."""
    if op == "add":
        what = f"{name} gets {x} more {item}"
        return f"{what}, so {v} + {x} = {new}."
    if op == "sub":
        what = f"{name} gives away {x} {item}" if x % 2 else f"{name} loses {x} {item}"
        return f"{what}, so {v} - {x} = {new}."
    if op == "mul":
        return f"The {item} are multiplied by {x}, so {v} * {x} = {new}."
    return f"{name} keeps one of {x} equal boxes, so {v} / {x} = {new}."


def _problem(rng: np.random.Generator, min_steps: int, max_steps: int, cot: bool = True) -> dict:
    name = _pick(rng, NAMES)
    friend = _pick(rng, [n for n in NAMES if n != name])
    item = _pick(rng, ITEMS)
    steps = int(rng.integers(min_steps, max_steps + 1))
    start = int(rng.integers(5, 61))
    ops, v = [], start
    for _ in range(steps):
        op, x = _draw_op(rng, v)
        ops.append((op, x))
        v = solve(v, [(op, x)])[-1]
    values = solve(start, ops)
    events = " ".join(_event(op, x, name, item, friend) for op, x in ops)
    question = f"{name} has {start} {item}. {events} How many {item} does {name} have at the end?"
    lines = [f"{name} starts with {start} {item}."]
    lines += [
        f"Step {i + 1}: " + _step(op, x, values[i], values[i + 1], name, item, friend) for i, (op, x) in enumerate(ops)
    ]
    lines.append(f"So {name} has {values[-1]} {item} at the end.")
    answer = f"The answer is \\boxed{{{values[-1]}}}."
    response = "<think>\n" + "\n".join(lines) + "\n</think>\n\n" + answer if cot else answer
    return {
        "question": question,
        "response": response,
        "answer": values[-1],
        "start": start,
        "ops": [[op, x] for op, x in ops],
        "steps": steps,
    }


# A record's meta: `answer` (int), `start`, `ops` ([op, operand] pairs), `steps`, `question`; `solve(start, ops)`
# recomputes the answer.
TASK = StepsTask(
    _problem,
    task="arith",
    name="synthetic",
    instructions=(INSTRUCTION, ANSWER_ONLY_INSTRUCTION),
    steps=(4, 8),
    stream="synthetic arith",
)
generate = TASK.generate
train_test_split = TASK.train_test_split
split = TASK.split
