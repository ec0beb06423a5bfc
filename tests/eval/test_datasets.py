"""Eval-set readers: the formats, the GPQA shuffle, and every bad row named by file and line."""

import gzip
import json
import random
import re

import pytest

from bitune_jax.data.records import DataError
from bitune_jax.eval.datasets import read_aime, read_chat, read_gpqa, read_mc

GPQA_ORIGINAL = {
    "question": "Which gas do plants take in?",
    "correct_answer": "carbon dioxide",
    "incorrect_answers": ["helium", "neon", "argon"],
    "id": "g1",
}
GPQA_CHOICES = {"question": "2 + 2 = ?", "choices": ["3", "4", "5", "6"], "label": 1}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_aime(tmp_path):
    path = write(
        tmp_path / "aime.jsonl",
        [{"problem": "1 + 1?", "answer": 2, "id": 3}, "", {"problem": "2 + 2?", "answer": " 4 "}],
    )
    a, b = read_aime(path)
    assert a.messages == [{"role": "user", "content": "1 + 1?"}] and a.answer == "2" and a.meta == {"id": 3}
    assert (b.answer, b.line, b.kind, b.where) == ("4", 3, "aime", f"{path}:3")


def authors_gpqa(rows):
    """The authors' data/prepare_gpqa.py, rewritten over our row layouts: seed the global `random` once with 42,
    then per row shuffle [correct, incorrect 1, 2, 3] and list the choices under "Choices:"."""
    random.seed(42)
    out = []
    for row in rows:
        query = row["question"].strip()
        letters = ["A", "B", "C", "D"]
        if "choices" in row:
            correct_answer, choices = row["choices"][row["label"]], list(row["choices"])
        else:
            correct_answer, choices = row["correct_answer"], [row["correct_answer"], *row["incorrect_answers"]]
        random.shuffle(choices)
        solution = letters[choices.index(correct_answer)]
        query += "\n\nChoices:"
        for i, choice in enumerate(choices):
            query += f"\n{letters[i]}: " + choice.strip()
        out.append((query, solution))
    random.seed()
    return out


def test_gpqa_shuffle_is_deterministic_and_gold_follows_the_correct_answer(tmp_path):
    rows = [dict(GPQA_ORIGINAL, question=f"Q{i}: which gas do plants take in?") for i in range(6)] + [GPQA_CHOICES]
    path = write(tmp_path / "gpqa.jsonl", rows)
    items = read_gpqa(path)
    assert [i.meta["choices"] for i in items] == [i.meta["choices"] for i in read_gpqa(path)]  # same every read
    for item, (query, solution) in zip(items, authors_gpqa(rows)):
        assert item.messages[0]["content"] == query and item.answer == solution
        correct = rows[items.index(item)].get("correct_answer", "4")
        assert item.meta["choices"]["ABCD".index(item.answer)] == correct
        assert re.search(r"\n\nChoices:\nA: .+\nB: .+\nC: .+\nD: .+$", item.messages[0]["content"])
    assert len({i.answer for i in items}) > 1  # the shuffle moves the gold letter around
    assert [i.meta["choices"] for i in read_gpqa(path, seed=0)] != [i.meta["choices"] for i in items]
    assert items[0].meta["id"] == "g1" and items[0].kind == "gpqa"


def test_gpqa_answer_as_letter_or_text(tmp_path):
    path = write(
        tmp_path / "g.jsonl",
        [
            {"question": "q", "choices": ["w", "x", "y", "z"], "answer": "y"},
            {"question": "q", "choices": ["w", "x", "y", "z"], "answer": "C"},
        ],
    )
    a, b = read_gpqa(path)
    assert a.meta["choices"]["ABCD".index(a.answer)] == "y" and b.meta["choices"]["ABCD".index(b.answer)] == "y"


def test_chat_gold_from_answer_or_box(tmp_path):
    msgs = [{"role": "user", "content": "3 * 3?"}, {"role": "assistant", "content": "So \\boxed{9}."}]
    path = write(tmp_path / "c.jsonl", [{"messages": msgs}, {"messages": msgs, "answer": 10, "id": 1}])
    a, b = read_chat(path)
    assert a.answer == "9" and a.messages == msgs[:1] and a.reference == "So \\boxed{9}."
    assert b.answer == "10" and b.meta == {"id": 1} and b.kind == "chat"


def test_mc_schema(tmp_path):
    path = write(
        tmp_path / "mc.jsonl",
        [
            {"question": "q1", "choices": ["a", "b"], "label": 1},
            {"context": "ctx", "question": "q2", "choices": ["a", "b", "c"], "answer": "C", "id": 5},
            {"context": "only context", "choices": ["a", "b"], "answer": "a"},
        ],
    )
    a, b, c = read_mc(path)
    assert (a.question, a.choices, a.label) == ("q1", ("a", "b"), 1)
    assert (b.question, b.label, b.meta) == ("ctx\nq2", 2, {"id": 5})
    assert (c.question, c.label) == ("only context", 0)


def test_committed_mc_set_reads():
    items = read_mc("tests/data_files/mc_small.jsonl")
    assert len(items) == 20 and all(2 <= len(i.choices) <= 4 for i in items)


BAD = [
    (read_aime, '{"problem": "p"}', "missing field 'answer'"),
    (read_aime, '{"answer": 3}', "missing field 'problem'"),
    (read_aime, '{"problem": 3, "answer": 3}', "field 'problem' must be str, got int"),
    (read_aime, '{"problem": "", "answer": 3}', "field 'problem' is empty"),
    (read_aime, '{"problem": "p", "answer": "\\\\boxed{7}"}', "write the gold answer bare"),
    (read_aime, '{"problem": "p", "answer": " "}', "field 'answer' is empty"),
    (read_aime, '{"problem": "p", "answer": 3', "malformed JSON"),
    (read_aime, "[1, 2]", "a row must be a JSON object, got list"),
    (
        read_gpqa,
        '{"question": "q", "correct_answer": "a", "incorrect_answers": ["b", "c"]}',
        "field 'incorrect_answers' must hold 3 strings, got 2",
    ),
    (read_gpqa, '{"question": "q", "correct_answer": "a"}', "missing field 'incorrect_answers'"),
    (read_gpqa, '{"question": "q", "answers": []}', "missing field: a GPQA row needs 'choices'"),
    (read_gpqa, '{"question": "q", "choices": ["a", "b", "c", "d"]}', "missing field 'label'"),
    (read_gpqa, '{"question": "q", "choices": ["a", "b", "c", "d"], "answer": "e"}', "field 'answer' must be"),
    (read_gpqa, '{"choices": ["a", "b", "c", "d"], "label": 0}', "missing field 'question'"),
    (read_chat, '{"prompt": "q", "response": "a"}', "missing field 'messages'"),
    (
        read_chat,
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        "no gold answer",
    ),
    (read_chat, '{"messages": [{"role": "user", "content": "q"}]}', "at least 2 messages"),
    (read_mc, '{"choices": ["a", "b"], "label": 0}', "missing field 'question' (or 'context')"),
    (read_mc, '{"question": "q", "label": 0}', "missing field 'choices'"),
    (read_mc, '{"question": "q", "choices": ["a"], "label": 0}', "at least 2 strings, got 1"),
    (read_mc, '{"question": "q", "choices": ["a", ""], "label": 0}', "choices[1] must be a non-empty string"),
    (read_mc, '{"question": "q", "choices": ["a", "b"]}', "missing field 'label'"),
    (read_mc, '{"question": "q", "choices": ["a", "b"], "label": 2}', "label 2 is out of range for 2 choices"),
    (read_mc, '{"question": "q", "choices": ["a", "b"], "label": "1"}', "field 'label' must be int, got str"),
    (read_mc, '{"question": "q", "choices": ["a", "b"], "label": true}', "field 'label' must be int, got bool"),
    (read_mc, '{"question": "q", "choices": ["a", "b"], "answer": "C"}', "field 'answer' must be a letter A-B"),
    (read_mc, '{"question": "q", "choices": ["a", "b"], "label": 0, "answer": "B"}', "disagree"),
    (read_mc, '{"question": "q", "choices": ["a", "b", "a "], "label": 0}', "choices 0 and 2 are the same text 'a'"),
    (
        read_mc,
        json.dumps({"question": "q", "choices": [f"c{i}" for i in range(27)], "label": 0}),
        "holds 27 choices; at most 26",
    ),
    (
        read_gpqa,
        '{"question": "q", "correct_answer": "a", "incorrect_answers": ["b", "a", "c"]}',
        "choices 0 and 2 are the same text 'a'",
    ),
    (read_aime, '{"problem": "p", "answer": null}', "field 'answer' must be str or int, got NoneType"),
    (
        read_chat,
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": None}
        ),
        "field 'answer' must be str or int, got NoneType",
    ),
    (
        read_chat,
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": " "}
        ),
        "field 'answer' is empty",
    ),
    (
        read_chat,
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "so \\boxed{}"}]}),
        "last \\boxed{} is empty",
    ),
    (read_mc, b'{"question": "caf\xe9", "choices": ["a", "b"], "label": 0}', "not UTF-8 text (byte 0xe9 at column 18)"),
]


@pytest.mark.parametrize("reader,bad,message", BAD)
def test_bad_row_names_file_and_line(tmp_path, reader, bad, message):
    good = {
        read_aime: '{"problem": "p", "answer": 1}',
        read_gpqa: json.dumps(GPQA_CHOICES),
        read_chat: json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\boxed{1}"}]}
        ),
        read_mc: '{"question": "q", "choices": ["a", "b"], "label": 0}',
    }[reader]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in (good, "", bad, good)) + b"\n")
    with pytest.raises(DataError) as err:
        reader(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: data file not found"):
        read_mc(tmp_path / "nope.jsonl")


def test_gzip_and_unreadable_files(tmp_path):
    rows = [{"question": "q", "choices": ["a", "b"], "label": 1}] * 50
    packed = tmp_path / "mc.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    assert len(read_mc(packed)) == 50  # the eval readers read .jsonl.gz too
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"cut.jsonl.gz: not a complete gzip file .* lines read before the damage"):
        read_mc(cut)
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match="fake.jsonl.gz: not a complete gzip file"):
        read_mc(fake)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty.jsonl: no rows \(the file is empty or blank\)"):
        read_aime(tmp_path / "empty.jsonl")
