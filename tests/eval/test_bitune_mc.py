"""The Bitune authors' zero-shot multiple-choice tasks render exactly as their harness's task YAMLs do (the strings
below are the YAMLs' `doc_to_text` / `doc_to_choice` / `doc_to_target` rendered by hand), with BOS forced, and bad
rows name their file, line and field."""

import json

import pytest
import tokenizers

from bitune_jax.data.records import DataError
from bitune_jax.eval.bitune_mc import AUTHORS_MC, read_bitune_task
from bitune_jax.eval.multiple_choice import MCConfig, encode_item
from bitune_jax.tokenizer import Tokenizer

ROWS = {
    "piqa": {"goal": "Keep a door open", "sol1": "Use a wedge.", "sol2": "Use a cake.", "label": 0},
    "arc": {
        "question": "Which is a gas?",
        "choices": {"text": ["iron", "steam", "wood"], "label": ["A", "B", "C"]},
        "answerKey": "B",
        "id": "x",
    },
    "csqa": {
        "question": "Where is a fork?",
        "choices": {"text": ["drawer", "sky"], "label": ["A", "B"]},
        "answerKey": "A",
    },
    "siqa": {
        "context": "Tracy ran.",
        "question": "Why?",
        "answerA": "late",
        "answerB": "bored",
        "answerC": "sad",
        "label": "1",
    },
    "mmlu": {"question": " What is 2+2? ", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "high_school_math"},
}
EXPECTED = {
    "piqa": (
        "Question: Keep a door open\n\nChoices:\nUse a wedge.\nUse a cake.\n\nAnswer:",
        ("Use a wedge.", "Use a cake."),
        0,
    ),
    "arc": ("Question: Which is a gas?\n\nChoices:\niron\nsteam\nwood\n\nAnswer:", ("iron", "steam", "wood"), 1),
    "csqa": ("Question: Where is a fork?\n\nChoices:\ndrawer\nsky\n\nAnswer:", ("drawer", "sky"), 0),
    "siqa": (
        "Question: Given the context, answer correctly the question.\nContext: Tracy ran.\nQuestion: Why?\n\n"
        "Choices:\n(0) late\n(1) bored\n(2) sad\n\nAnswer:",
        ("(0)", "(1)", "(2)"),
        0,
    ),
    "mmlu": (
        "The following are multiple choice questions (with answers) about high school math.\n\n"
        "Question: What is 2+2?\n(0). 3\n(1). 4\n(2). 5\n(3). 6\n\nAnswer:",
        ("(0)", "(1)", "(2)", "(3)"),
        1,
    ),
}


def write(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("task", sorted(ROWS))
def test_items_render_as_the_authors_harness_does(task, tmp_path):
    (item,) = read_bitune_task(write(tmp_path, [ROWS[task]]), task)
    assert (item.question, item.choices, item.label) == EXPECTED[task]
    assert item.where.endswith("rows.jsonl:1")


def byte_tokenizer() -> Tokenizer:
    """One token per character (ids 3..), BOS 1, and a tokenizer whose own policy adds no BOS."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{chr(i): i - 29 for i in range(32, 127)}, "\n": 98}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Split("", behavior="isolated")
    return Tokenizer(backend, bos_id=1, eos_ids=(2,), pad_id=0, add_bos=False)


def test_bos_is_forced_and_choices_continue_after_a_space(tmp_path):
    tok = byte_tokenizer()
    (item,) = read_bitune_task(write(tmp_path, [ROWS["siqa"]]), "siqa")
    forced, plain = encode_item(tok, item, AUTHORS_MC), encode_item(tok, item, MCConfig(template="{question}"))
    assert forced.prompt[0] == 1 and forced.prompt[1:] == plain.prompt  # BOS on, whatever the tokenizer's policy
    assert forced.prompt[1:] == tok.encode(item.question, add_bos=False)  # the prompt is the rendered context
    assert forced.texts == [" (0)", " (1)", " (2)"] and forced.continuations[1] == tok.encode(" (1)")


@pytest.mark.parametrize(
    "task,row,message",
    [
        ("arc", {**ROWS["arc"], "answerKey": "D"}, "answerKey 'D' is not one of the choice labels"),
        ("siqa", {**ROWS["siqa"], "label": "0"}, "field 'label' must be 1, 2 or 3"),
        ("mmlu", {**ROWS["mmlu"], "choices": ["3", "4", "4", "6"]}, "choices 1 and 2 are the same text"),
        ("piqa", {k: v for k, v in ROWS["piqa"].items() if k != "sol2"}, "missing field 'sol2'"),
    ],
)
def test_bad_rows_name_file_line_and_field(task, row, message, tmp_path):
    with pytest.raises(DataError, match=rf"rows.jsonl:2: .*{message}"):
        read_bitune_task(write(tmp_path, [ROWS[task], row]), task)


def test_mmlu_reports_micro_as_the_authors_and_macro_over_subjects(tmp_path):
    """Their harness averages MMLU over questions (the group weights subtasks by size); the repetition paper's
    forgetting eval averages over subjects. Three math questions and one law question, one math one wrong."""
    from bitune_jax.eval.bitune_mc import summarize_task
    from bitune_jax.eval.multiple_choice import MCScore

    rows = [dict(ROWS["mmlu"], subject="math")] * 3 + [dict(ROWS["mmlu"], subject="law")]
    items = read_bitune_task(write(tmp_path, rows), "mmlu")
    scores = [
        MCScore(
            label=1,
            logprob_sum=[-1.0, 0.0, -2.0, -3.0] if ok else [0.0, -1.0, -2.0, -3.0],
            n_tokens=[2] * 4,
            n_chars=[3] * 4,
        )
        for ok in (False, True, True, True)
    ]
    out = summarize_task(items, scores)
    assert out["accuracy_micro"] == out["accuracy"] == pytest.approx(3 / 4)
    assert out["accuracy_macro"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["subjects"] == {"law": 1.0, "math": pytest.approx(2 / 3)}
    assert "accuracy_macro" not in summarize_task(read_bitune_task(write(tmp_path, [ROWS["piqa"]]), "piqa"), scores[:1])
