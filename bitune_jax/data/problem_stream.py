"""What every generated task shares: a seeded stream of distinct problems as chat records, and a train/test split
that shares no problem text while keeping training pools nested (`generate(n)` a prefix of `generate(m > n)`).

A task supplies `make_problem(rng) -> dict` with at least `question` and `response` (the rest is its structured
problem, kept in the record's `meta`); the stream renders `question + "\\n\\n" + instruction` as the user turn and
`response` as the assistant turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bitune_jax.data.records import Record

ProblemFn = Callable[[np.random.Generator], dict[str, Any]]


def check_steps(min_steps: int, max_steps: int) -> None:
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")


def distinct_records(
    make_problem: ProblemFn,
    seed: int | list[int],
    *,
    task: str,
    instruction: str,
    source: str,
    exclude: frozenset[str] = frozenset(),
) -> Iterator[Record]:
    """Distinct problems, forever, in a fixed order for `seed`; questions in `exclude` (a test set) are skipped."""
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    line = 0
    while True:
        p = make_problem(rng)
        if p["question"] in seen:
            continue
        seen.add(p["question"])
        line += 1
        messages = [
            {"role": "user", "content": f"{p['question']}\n\n{instruction}"},
            {"role": "assistant", "content": p.pop("response")},
        ]
        yield Record(messages=messages, file=source, line=line, meta={"task": task, **p})


def disjoint_split(
    train_problem: ProblemFn,
    test_problem: ProblemFn,
    n_train: int,
    n_test: int,
    *,
    seed: int,
    task: str,
    instruction: str,
    name: str,
) -> tuple[list[Record], list[Record]]:
    """`(training pool, test set)` sharing no problem text; `name` labels the records' sources.

    The test set depends only on `(seed, n_test, test_problem)`; the pool is a stream that skips test problems, so a
    larger `n_train` extends the pool without changing its first entries (nested prefixes stay valid).
    """
    common = dict(task=task, instruction=instruction)
    test_stream = distinct_records(test_problem, [seed, 1], source=f"<{name} test seed={seed}>", **common)
    test = list(itertools.islice(test_stream, n_test))
    exclude = frozenset(r.meta["question"] for r in test)
    pool = distinct_records(train_problem, [seed, 0], source=f"<{name} train seed={seed}>", exclude=exclude, **common)
    return list(itertools.islice(pool, n_train)), test
