"""What every generated task shares: a seeded stream of distinct problems as chat records, and a train/test split
that shares no problem text while keeping training pools nested (`generate(n)` a prefix of `generate(m > n)`).

A task supplies `make_problem(rng) -> dict` with at least `question` and `response` (the rest is its structured
problem, kept in the record's `meta`); the stream renders `question + "\\n\\n" + instruction` as the user turn and
`response` as the assistant turn.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class StepsTask:
    """A task whose problems take `min_steps..max_steps` steps, with the reasoning trace or without it (`cot`): the
    wiring of `distinct_records` and `disjoint_split` that the arithmetic and list-edits tasks share. Each task module
    binds its `generate`, `train_test_split` and `split` to these methods, so the three behave alike in every task."""

    make_problem: Callable[[np.random.Generator, int, int, bool], dict[str, Any]]  # (rng, min, max, cot)
    task: str  # the records' meta["task"]
    name: str  # the split's sources: "<{name} train seed=...>", "<{name} test seed=...>"
    instructions: tuple[str, str]  # appended to the question: with the trace, without it
    steps: tuple[int, int]  # the default `(min_steps, max_steps)`
    stream: str  # `generate`'s source: "<{stream} seed=...>"

    def _steps(self, min_steps: int | None, max_steps: int | None) -> tuple[int, int]:
        return (self.steps[0] if min_steps is None else min_steps, self.steps[1] if max_steps is None else max_steps)

    def _problems(self, min_steps: int, max_steps: int, cot: bool) -> ProblemFn:
        check_steps(min_steps, max_steps)
        return lambda rng: self.make_problem(rng, min_steps, max_steps, cot)

    def _rendering(self, cot: bool) -> dict[str, str]:
        return {"task": self.task, "instruction": self.instructions[0 if cot else 1]}

    def generate(
        self, n: int, *, seed: int, min_steps: int | None = None, max_steps: int | None = None, cot: bool = True
    ) -> list[Record]:
        """`n` distinct problems; `generate(n)` is a prefix of `generate(m > n)`. Each record's `meta` holds the
        structured problem (`answer`, `start`, `ops`, `steps`, `question`; the task module says which form)."""
        problems = self._problems(*self._steps(min_steps, max_steps), cot)
        source = f"<{self.stream} seed={seed}>"
        return list(itertools.islice(distinct_records(problems, seed, source=source, **self._rendering(cot)), n))

    def train_test_split(
        self,
        n_train: int,
        n_test: int,
        *,
        seed: int,
        min_steps: int | None = None,
        max_steps: int | None = None,
        test_min_steps: int | None = None,
        test_max_steps: int | None = None,
        cot: bool = True,
    ) -> tuple[list[Record], list[Record]]:
        """A training pool and a test set that share no problem text.

        The test set depends only on `(seed, n_test, test steps)`; the pool is a stream that skips test problems, so
        a larger `n_train` extends the pool without changing its first entries (nested prefixes stay valid). Steps
        default to the task's range (`steps`), test steps to the training range; set them higher to measure length
        generalization.
        """
        min_steps, max_steps = self._steps(min_steps, max_steps)
        train = self._problems(min_steps, max_steps, cot)
        test = self._problems(
            min_steps if test_min_steps is None else test_min_steps,
            max_steps if test_max_steps is None else test_max_steps,
            cot,
        )
        return disjoint_split(train, test, n_train, n_test, seed=seed, name=self.name, **self._rendering(cot))

    def split(self, spec) -> tuple[list[Record], list[Record]]:
        """`(training pool, disjoint test set)` from any object with `pool_size`, `test_size`, `seed`, `min_steps`,
        `max_steps` and `cot` (the shape of a run config's `data.synthetic` section): the trainer's pool and its
        eval's items."""
        return self.train_test_split(
            spec.pool_size,
            spec.test_size,
            seed=spec.seed,
            min_steps=spec.min_steps,
            max_steps=spec.max_steps,
            cot=spec.cot,
        )
