"""The list-edits long-CoT task: correct traces, bounded distinct lists, varied phrasing, disjoint train/test."""

import collections
import re
import types

import pytest

from bitune_jax.data import read_jsonl
from bitune_jax.eval.answers import is_correct, last_boxed
from bitune_jax.tasks.list_edits import (
    ANSWER_ONLY_INSTRUCTION,
    FAMILIES,
    INSTRUCTION,
    MAX_LEN,
    MIN_LEN,
    OPS,
    REMARKS,
    START_STYLES,
    STEP_STYLES,
    TEMPLATES,
    TRACE,
    format_list,
    generate,
    parse_list,
    single_step_items,
    solve,
    split,
    trace_steps,
    train_test_split,
    write_jsonl,
)

STEP_PATTERN_OF_STYLE = [  # one pattern per step-line style, matching any edit and any bracketed list
    re.compile(
        "^" + re.escape(s).replace(r"\{i\}", r"\d+").replace(r"\{edit\}", ".+").replace(r"\{after\}", r"[^\[\]]*") + "$"
    )
    for s in STEP_STYLES
]
SENTENCE = re.compile(r"(?<=[.?]) ")


def _words(inside: str) -> list[str]:
    return inside.split(", ")


def test_solve_by_hand_for_every_op():
    start = ["apple", "cat", "dog"]
    assert solve(start, [("append", "egg")]) == [["apple", "cat", "dog", "egg"]]
    assert solve(start, [("remove", "cat")]) == [["apple", "dog"]]
    assert solve(start, [("swap", None)]) == [["cat", "apple", "dog"]]
    assert solve(start, [("last_to_front", None)]) == [["dog", "apple", "cat"]]
    assert solve(start, [("reverse", None)]) == [["dog", "cat", "apple"]]
    ops = [("append", "egg"), ("swap", None), ("remove", "dog"), ("last_to_front", None), ("reverse", None)]
    assert solve(start, ops) == [
        ["apple", "cat", "dog", "egg"],
        ["cat", "apple", "dog", "egg"],
        ["cat", "apple", "egg"],
        ["egg", "cat", "apple"],
        ["apple", "cat", "egg"],
    ]
    assert start == ["apple", "cat", "dog"]  # the input list is not modified
    assert solve(start, []) == []


@pytest.mark.parametrize(
    "ops, match",
    [
        ([("append", "cat")], "already in"),
        ([("remove", "egg")], "not in"),
        ([("rotate", None)], "unknown op"),
        ([("append", None)], "needs"),
        ([("reverse", "cat")], "takes no"),
    ],
)
def test_solve_rejects_invalid_edits(ops, match):
    with pytest.raises(ValueError, match=match):
        solve(["apple", "cat", "dog"], ops)


def test_traces_restate_solve_and_answer_is_boxed():
    styles, remarks = collections.Counter(), 0
    for r in generate(300, seed=1, min_steps=1, max_steps=12):
        prompt, response, meta = r.messages[0]["content"], r.messages[1]["content"], r.meta
        assert r.messages[0]["role"] == "user" and r.messages[1]["role"] == "assistant"
        assert prompt == f"{meta['question']}\n\n{INSTRUCTION}" and meta["task"] == "list_edits"
        lists = solve(meta["start"], meta["ops"])
        assert meta["answer"] == format_list(lists[-1]) and isinstance(meta["answer"], str)
        lines = response.split("\n")
        assert lines[0] == "<think>"
        assert lines[1] in {s.format(items=format_list(meta["start"])) for s in START_STYLES}
        steps = trace_steps(response)
        assert [after for _, after in steps] == lists and len(steps) == meta["steps"]
        assert [edit for edit, _ in steps] == [TRACE[op].format(x=x) for op, x in meta["ops"]]  # canonical edits
        body = lines[2 : lines.index("</think>")]
        for i, line in enumerate(body):
            style = [k for k, p in enumerate(STEP_PATTERN_OF_STYLE) if p.match(line)]
            if style:
                styles[style[0]] += 1
            else:  # a remark, always followed by a step line
                assert any(line == m.format(n=len(w)) for m in REMARKS for w in [meta["start"], *lists])
                assert i + 1 < len(body) and any(p.match(body[i + 1]) for p in STEP_PATTERN_OF_STYLE)
                remarks += 1
        assert lines[lines.index("</think>") :] == ["</think>", "", f"The answer is \\boxed{{{meta['answer']}}}."]
        assert last_boxed(response) == meta["answer"] and is_correct(last_boxed(response), meta["answer"])
        assert parse_list(response) == lists[-1]
    assert sorted(styles) == list(range(len(STEP_STYLES)))  # every style is drawn
    total = sum(styles.values())
    assert 0.2 < remarks / total < 0.4  # REMARK_P = 0.3 per step


def test_trace_steps_reads_a_generated_trace_up_to_where_it_breaks():
    text = "<think>\nStart: [a, b]\nStep 1: swap the first two -> [b, a]\nOkay.\n2. reverse: [a, b]\nblah [x]\n"
    assert trace_steps(text) == [("swap the first two", ["b", "a"]), ("reverse", ["a", "b"])]
    assert trace_steps("The answer is \\boxed{a}.") == []


def test_lists_stay_in_bounds_and_distinct():
    lengths = collections.Counter()
    for r in generate(500, seed=2):
        start = r.meta["start"]
        assert 4 <= len(start) <= 6 and 8 <= r.meta["steps"] <= 12
        for words in [start, *solve(start, r.meta["ops"])]:
            assert MIN_LEN <= len(words) <= MAX_LEN and len(set(words)) == len(words)
            lengths[len(words)] += 1
    assert set(lengths) == set(range(MIN_LEN, MAX_LEN + 1))  # the bounds are reached, not just respected


def test_families_ops_and_templates_all_appear():
    """In 500 problems: both families, every op, and >= 3 phrasings of every op in each family, recovered by
    splitting each question back into its sentences (each edit sentence must be exactly one template's rendering)."""
    seen = collections.defaultdict(set)
    records = generate(500, seed=3)
    assert {r.meta["family"] for r in records} == set(FAMILIES)
    for r in records:
        family, ops = r.meta["family"], r.meta["ops"]
        sentences = SENTENCE.split(r.meta["question"])
        assert len(sentences) == len(ops) + 2 and sentences[-1].endswith("?")
        assert sentences[0].endswith(f": {format_list(r.meta['start'])}.")
        for sentence, (op, x) in zip(sentences[1:-1], ops, strict=True):
            hits = [i for i, t in enumerate(TEMPLATES[family][op]) if t.format(x=x) == sentence]
            assert len(hits) == 1, (sentence, op, x)
            seen[family, op].add(hits[0])
    assert set(seen) == {(f, op) for f in FAMILIES for op in OPS}
    assert all(len(templates) >= 3 for templates in seen.values()), dict(seen)


def test_deterministic_and_streamed():
    a = generate(40, seed=4)
    assert [r.messages for r in a] == [r.messages for r in generate(40, seed=4)]
    assert [r.meta for r in generate(15, seed=4)] == [r.meta for r in a[:15]]  # a prefix of the stream
    assert [r.messages for r in generate(40, seed=5)] != [r.messages for r in a]
    assert len({r.meta["question"] for r in generate(300, seed=0, min_steps=1, max_steps=1)}) == 300


def test_step_range_and_errors():
    assert {r.meta["steps"] for r in generate(60, seed=0, min_steps=2, max_steps=3)} == {2, 3}
    for lo, hi in ((5, 4), (0, 3)):
        with pytest.raises(ValueError, match="min_steps <= max_steps"):
            generate(1, seed=0, min_steps=lo, max_steps=hi)
        with pytest.raises(ValueError, match="min_steps <= max_steps"):
            train_test_split(1, 1, seed=0, min_steps=lo, max_steps=hi)


def test_answer_only_variant():
    for r in generate(20, seed=6, cot=False):
        assert r.response == f"The answer is \\boxed{{{r.meta['answer']}}}." and "<think>" not in r.response
        assert r.messages[0]["content"] == f"{r.meta['question']}\n\n{ANSWER_ONLY_INSTRUCTION}"


def test_train_test_disjoint_and_nested():
    train, test = train_test_split(300, 100, seed=5, min_steps=1, max_steps=1)
    assert len(train) == 300 and len(test) == 100
    train_q, test_q = {r.meta["question"] for r in train}, {r.meta["question"] for r in test}
    assert len(train_q) == 300 and len(test_q) == 100 and not train_q & test_q
    more, test_again = train_test_split(600, 100, seed=5, min_steps=1, max_steps=1)
    assert [r.messages for r in more[:300]] == [r.messages for r in train]  # a larger pool extends the smaller
    assert [r.messages for r in test_again] == [r.messages for r in test]
    _, long_test = train_test_split(10, 20, seed=5, min_steps=1, max_steps=2, test_min_steps=6, test_max_steps=6)
    assert {r.meta["steps"] for r in long_test} == {6}
    spec = types.SimpleNamespace(pool_size=30, test_size=10, seed=5, min_steps=1, max_steps=1, cot=True)
    pool, held_out = split(spec)
    assert [r.messages for r in pool] == [r.messages for r in train[:30]]
    assert [r.messages for r in held_out] == [r.messages for r in test[:10]]


def test_disjoint_when_collisions_are_likely(monkeypatch):
    """With three words per family and two-word start lists, independent streams share questions; the split not."""
    from bitune_jax.tasks import list_edits

    monkeypatch.setattr(list_edits, "WORDS", {"list": ("apple", "cat", "dog"), "queue": ("Tom", "Ann", "Ben")})
    monkeypatch.setattr(list_edits, "START_LEN", (2, 2))
    a, b = generate(300, seed=0, min_steps=1, max_steps=1), generate(100, seed=1, min_steps=1, max_steps=1)
    assert {r.meta["question"] for r in a} & {r.meta["question"] for r in b}  # the space is small enough to collide
    train, test = train_test_split(300, 100, seed=0, min_steps=1, max_steps=1)
    assert not {r.meta["question"] for r in train} & {r.meta["question"] for r in test}


def test_jsonl_roundtrip(tmp_path):
    records = generate(5, seed=2)
    back = read_jsonl(write_jsonl(records, tmp_path / "lists.jsonl"))
    assert [r.messages for r in back] == [r.messages for r in records]
    assert [r.meta for r in back] == [r.meta for r in records]


def test_single_step_items():
    items = single_step_items(200, seed=0)
    counts = collections.Counter((it["family"], it["op"]) for it in items)
    assert set(counts) == {(f, op) for f in FAMILIES for op in OPS} and set(counts.values()) == {20}
    phrasings = collections.defaultdict(set)
    for it in items:
        assert it["after"] == solve(it["words"], [(it["op"], it["arg"])])[-1]
        assert it["gold"] == f"[{format_list(it['after'])}]" and parse_list(it["gold"]) == it["after"]
        assert MIN_LEN <= len(it["words"]) <= MAX_LEN and MIN_LEN <= len(it["after"]) <= MAX_LEN
        assert len(set(it["words"])) == len(it["words"]) and len(set(it["after"])) == len(it["after"])
        assert f"[{format_list(it['words'])}]" in it["prompt"] and it["edit"] in it["prompt"]
        assert it["edit"] in {t.format(x=it["arg"]) for t in TEMPLATES[it["family"]][it["op"]]}
        phrasings[it["family"], it["op"]].add(it["edit"].replace(str(it["arg"]), "X"))
    assert all(len(p) >= 3 for p in phrasings.values())
    assert [it["prompt"] for it in single_step_items(30, seed=0)] == [it["prompt"] for it in items[:30]]
    assert [it["prompt"] for it in single_step_items(30, seed=1)] != [it["prompt"] for it in items[:30]]
    assert {len(it["words"]) for it in items} == set(range(MIN_LEN, MAX_LEN + 1))


def test_single_step_items_shorter_lists():
    items = single_step_items(100, seed=0, min_len=2, max_len=3)
    assert {len(it["words"]) for it in items} == {2, 3} and {len(it["after"]) for it in items} == {2, 3}
    assert {it["op"] for it in items} == set(OPS)
    for lo, hi in ((3, 3), (1, 4), (2, 9)):
        with pytest.raises(ValueError, match="min_len < max_len"):
            single_step_items(1, seed=0, min_len=lo, max_len=hi)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[apple, dog]", ["apple", "dog"]),
        ("The list is now [apple, dog, egg]. Then [cat].", ["apple", "dog", "egg"]),  # the first bracketed list
        ("[Tom,Ann ,  Ben]", ["Tom", "Ann", "Ben"]),
        ("['apple', \"dog\"]", ["apple", "dog"]),
        ("<think>\nStart: [a, b]\n</think>\n\nThe answer is \\boxed{b, a}.", ["b", "a"]),  # a box wins
        ("\\boxed{[b, a]}", ["b", "a"]),
        ("[]", []),
        ("no list here", None),
        ("[apple, dog", None),
        ("[apple, , dog]", None),
        ("", None),
    ],
)
def test_parse_list(text, expected):
    assert parse_list(text) == expected


def test_parse_list_round_trips_generated_answers():
    for r in generate(50, seed=7):
        final = solve(r.meta["start"], r.meta["ops"])[-1]
        assert parse_list(f"[{format_list(final)}]") == final
        assert parse_list(f"The answer is \\boxed{{{r.meta['answer']}}}.") == final
