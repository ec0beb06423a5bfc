"""The synthetic long-CoT task: deterministic, correct, disjoint train/test, tunable trace length."""

import re

import numpy as np
import pytest

from bitune_jax.data import read_jsonl, tokenize_records
from bitune_jax.tasks.arithmetic import INSTRUCTION, generate, solve, train_test_split, write_jsonl

EQUATION = re.compile(r"^Step (\d+): .*, so (\d+) ([-+*/]) (\d+) = (\d+)\.$")
APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def test_deterministic_and_streamed():
    a, b = generate(30, seed=3), generate(30, seed=3)
    assert [r.messages for r in a] == [r.messages for r in b] and [r.meta for r in a] == [r.meta for r in b]
    assert [r.messages for r in generate(10, seed=3)] == [r.messages for r in a[:10]]  # a prefix of the stream
    assert [r.messages for r in generate(30, seed=4)] != [r.messages for r in a]
    assert len({r.meta["question"] for r in generate(300, seed=0, min_steps=1, max_steps=2)}) == 300


def test_answers_recomputed_from_trace_and_structure():
    for r in generate(200, seed=1, min_steps=1, max_steps=10):
        prompt, response = r.messages[0]["content"], r.messages[1]["content"]
        meta = r.meta
        assert prompt == f"{meta['question']}\n\n{INSTRUCTION}" and r.messages[0]["role"] == "user"
        values = solve(meta["start"], [tuple(op) for op in meta["ops"]])
        assert values[-1] == meta["answer"] and all(2 <= v <= 999 for v in values)
        assert response.startswith("<think>\n")
        assert response.endswith(f"\n</think>\n\nThe answer is \\boxed{{{meta['answer']}}}.")
        steps = [EQUATION.match(line) for line in response.splitlines() if line.startswith("Step ")]
        assert len(steps) == meta["steps"] == len(meta["ops"]) and all(steps)
        running = meta["start"]
        for i, m in enumerate(steps):
            lhs, op, rhs, result = int(m[2]), m[3], int(m[4]), int(m[5])
            assert int(m[1]) == i + 1 and lhs == running and APPLY[op](lhs, rhs) == result
            if op == "/":
                assert lhs % rhs == 0
            running = result
        assert running == meta["answer"]


def test_trace_length_is_tunable(tok):
    short, long = generate(40, seed=0, min_steps=2, max_steps=3), generate(40, seed=0, min_steps=12, max_steps=16)
    assert {r.meta["steps"] for r in short} == {2, 3} and {r.meta["steps"] for r in long} <= set(range(12, 17))
    for data in (short, long):
        assert all(r.response.count("\nStep ") == r.meta["steps"] for r in data)
    (short_ex, _), (long_ex, _) = (tokenize_records(d, tok, max_len=4096) for d in (short, long))
    mean = lambda ex: np.mean([len(e.answer_ids) for e in ex])  # noqa: E731
    assert mean(long_ex) > 3 * mean(short_ex)
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        generate(1, seed=0, min_steps=5, max_steps=4)


def test_train_test_disjoint_and_nested():
    train, test = train_test_split(300, 100, seed=5, min_steps=1, max_steps=2)
    assert len(train) == 300 and len(test) == 100
    train_q, test_q = {r.meta["question"] for r in train}, {r.meta["question"] for r in test}
    assert len(train_q) == 300 and len(test_q) == 100 and not train_q & test_q
    more, test_again = train_test_split(600, 100, seed=5, min_steps=1, max_steps=2)
    assert [r.messages for r in more[:300]] == [r.messages for r in train]  # a larger pool extends the smaller
    assert [r.messages for r in test_again] == [r.messages for r in test]
    _, long_test = train_test_split(10, 20, seed=5, min_steps=1, max_steps=2, test_min_steps=6, test_max_steps=6)
    assert {r.meta["steps"] for r in long_test} == {6}


def test_jsonl_roundtrip(tmp_path):
    records = generate(5, seed=2)
    back = read_jsonl(write_jsonl(records, tmp_path / "arith.jsonl"))
    assert [r.messages for r in back] == [r.messages for r in records]
    assert [r.meta for r in back] == [r.meta for r in records] and isinstance(back[0].meta["answer"], int)
    assert back[2].where == f"{tmp_path / 'arith.jsonl'}:3"
