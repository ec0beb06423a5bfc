"""MMLU forgetting eval: the authors' prompt, letter probabilities equal to a one-prompt-at-a-time NumPy softmax,
and the macro average over subjects."""

import json

import numpy as np
import pytest

import bitune_jax as bj
from bitune_jax.data import DataError
from bitune_jax.eval.mmlu import evaluate_mmlu, letter_ids, mmlu_prompt, read_mmlu
from tests.train.tiny_run import smollm2_tokenizer, write_tiny_model


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return bj.load(write_tiny_model(tmp_path_factory.mktemp("tiny"), smollm2_tokenizer()))


def rows(subject, n, offset=0):
    return [
        {
            "question": f"{subject} question {offset + i}?",
            "choices": ["w", "x", "y", "z"],
            "answer": (offset + i) % 4,
            "subject": subject,
        }
        for i in range(n)
    ]


def write(path, items):
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def test_prompt_is_the_authors(lm, tmp_path):
    dev = read_mmlu(write(tmp_path / "dev.jsonl", rows("law", 2)))
    test = read_mmlu(write(tmp_path / "test.jsonl", rows("law", 1, offset=7)))
    text = mmlu_prompt(lm.tokenizer, test[0], dev)
    query = "law question 7?\nAnswer with the letter enclosed in \\boxed{}.\n\nChoices:\nA: w\nB: x\nC: y\nD: z"
    assert text.endswith(query + "<|im_end|>\n<|im_start|>assistant\n\\boxed{")
    assert text.count("<|im_start|>assistant\n\\boxed{A}<|im_end|>") == 1  # shot 0: answer A
    assert text.count("<|im_start|>assistant\n\\boxed{B}<|im_end|>") == 1  # shot 1: answer B
    assert [lm.tokenizer.decode([i]) for i in letter_ids(lm.tokenizer)] == ["A", "B", "C", "D"]


def test_scores_equal_a_numpy_softmax_and_macro_averages_subjects(lm, tmp_path):
    dev = read_mmlu(write(tmp_path / "dev.jsonl", rows("law", 5) + rows("physics", 5)))
    test = read_mmlu(write(tmp_path / "test.jsonl", rows("law", 3, offset=10) + rows("physics", 5, offset=20)))
    out = evaluate_mmlu(lm, test, dev, shots=5, batch_size=3)
    ids = letter_ids(lm.tokenizer)
    expected = []
    for item in test:  # one prompt at a time, probabilities by NumPy
        shots = [d for d in dev if d.subject == item.subject][:5]
        prompt = lm.tokenizer.encode(mmlu_prompt(lm.tokenizer, item, shots), add_bos=False)
        logits = np.asarray(lm.logits(np.asarray([prompt])), np.float64)[0, -1]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        expected.append(bool(probs[ids][item.answer] == probs[ids].max()))
    assert out["correct"] == expected
    law, physics = np.mean(expected[:3]), np.mean(expected[3:])
    assert out["per_subject"] == pytest.approx({"law": law, "physics": physics})
    assert out["mmlu_macro"] == pytest.approx((law + physics) / 2)
    assert out["mmlu_micro"] == pytest.approx(np.mean(expected))


def test_bad_rows_and_too_few_shots(lm, tmp_path):
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'answer' must be the correct choice's index 0-3"):
        read_mmlu(write(tmp_path / "bad.jsonl", [dict(rows("law", 1)[0], answer=4)]))
    dev = read_mmlu(write(tmp_path / "dev.jsonl", rows("law", 2)))
    test = read_mmlu(write(tmp_path / "test.jsonl", rows("law", 1)))
    with pytest.raises(DataError, match=r"test.jsonl:1: subject 'law' has 2 dev rows, fewer than shots=5"):
        evaluate_mmlu(lm, test, dev, shots=5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"question": "  "}, "field 'question' is empty"),
        ({"choices": ["a", "", "c", "d"]}, r"choices\[1\] is empty"),
    ],
)
def test_empty_questions_and_choices_are_refused(tmp_path, change, message):
    row = {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "s", **change}
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1: {message}"):
        read_mmlu(path)


def test_repeated_choices_are_kept_but_reported(tmp_path):
    path = tmp_path / "mmlu.jsonl"
    rows = [{"question": "q", "choices": ["a", "b", "a ", "d"], "answer": 0, "subject": "s"}] * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=rf"2 MMLU rows list the same choice text twice \(first: {path}:1\)"):
        assert len(read_mmlu(path)) == 2
