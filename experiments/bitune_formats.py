"""The Bitune authors' data formats per task (`dkopi/Bitune` dataloaders.py): their prompt and answer functions
transcribed literally, the columns each task reads, their filters, and the checks a row must pass to be rendered.
`prepare_bitune_data` reads the splits and writes the training files from these.

For each task (ultrafeedback | gsm8k | arc | csqa | piqa | siqa), the authors (dkopi/Bitune at 7beb9f1,
`dataloaders.py`: `create_dataloaders` and `prepare_datasets`) build each training example from a prompt function
`q_func(row)` and an answer function `ans_func(row) = " " + answer + eos_token`, tokenize `q + ans` truncated to 512
tokens, and drop every example whose last token is not EOS, i.e. every example longer than 512 tokens. Every one
of their prompts has the form `"Question: " + P + "\\n\\nAnswer:"`, which is exactly this project's plain template
(`bitune_jax.data.tokenize.PLAIN_PROMPT`) with the instruction P, and every answer is `" " + R` + EOS, which is the
plain template's answer with the response R. So a row `{"prompt": P, "response": R}` trained with
`data.template = "plain"` is the authors' example, character for character (`authors_prompt_response` checks the
split of every row it makes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from bitune_jax.data.records import DataError
from bitune_jax.data.tokenize import PLAIN_PROMPT

PREFIX, SUFFIX = "Question: ", "\n\nAnswer:"  # PLAIN_PROMPT around its instruction

# The authors' q_func and ans_func, transcribed literally from `create_dataloaders` with `+ tokenizer.eos_token`
# left off each answer (the trainer appends EOS). UltraFeedback's functions see the row after the authors'
# `_filter`, which keeps only the gpt-4 completions (`authors_keep`).
# fmt: off
_Q: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ultrafeedback": lambda x: f"Question: {x['instruction']}{chr(10)}{chr(10)}Answer:",
    "gsm8k": lambda x: f"Question: {x['question']}\n\nAnswer:",
    "arc": lambda x: f"Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}{chr(10).join(x['choices']['text'])}{chr(10)}{chr(10)}Answer:",  # noqa: E501
    "csqa": lambda x: f"Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}{chr(10).join(x['choices']['text'])}{chr(10)}{chr(10)}Answer:",  # noqa: E501
    "piqa": lambda x: f"Question: {x['goal']}{chr(10)}{chr(10)}Choices:{chr(10)}{x['sol1']}{chr(10)}{x['sol2']}{chr(10)}{chr(10)}Answer:",  # noqa: E501
    "siqa": lambda x: f"Question: Given the context, answer correctly the question.{chr(10)}Context: {x['context']}{chr(10)}Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}(0) {x['answerA']}{chr(10)}(1) {x['answerB']}{chr(10)}(2) {x['answerC']}{chr(10)}{chr(10)}Answer:",  # noqa: E501
}
# fmt: on
_ANS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ultrafeedback": lambda x: " " + x["completions"][0]["response"],
    "gsm8k": lambda x: " " + x["answer"],
    "arc": lambda x: " " + x["choices"]["text"][x["choices"]["label"].index(x["answerKey"])],
    "csqa": lambda x: " " + x["choices"]["text"][x["choices"]["label"].index(x["answerKey"])],
    "piqa": lambda x: " " + (x["sol1"] if x["label"] == 0 else x["sol2"]),
    "siqa": lambda x: " " + f"({int(x['label']) - 1})",
}

# The same functions as the authors wrote them (EOS included), for the manifest.
_MC_Q = """lambda x: f"Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}{chr(10).join(x['choices']['text'])}{chr(10)}{chr(10)}Answer:\""""  # noqa: E501
_MC_ANS = """lambda x: " " + x["choices"]["text"][x["choices"]["label"].index(x["answerKey"])] + tokenizer.eos_token"""
AUTHORS_SOURCE: dict[str, dict[str, str]] = {
    "ultrafeedback": {
        "q_func": """lambda x: f"Question: {x['instruction']}{chr(10)}{chr(10)}Answer:\"""",
        "ans_func": """lambda x: " " + x["completions"][0]["response"] + tokenizer.eos_token""",
        "custom_filter": """ds.map(lambda x: {"completions": [c for c in x["completions"] if c["model"] == "gpt-4"]})"""
        """.filter(lambda x: len(x["completions"]) > 0)""",
    },
    "gsm8k": {
        "q_func": """lambda x: f"Question: {x['question']}\\n\\nAnswer:\"""",
        "ans_func": """lambda x: " " + x["answer"] + tokenizer.eos_token""",
    },
    "arc": {"q_func": _MC_Q, "ans_func": _MC_ANS},
    "csqa": {"q_func": _MC_Q, "ans_func": _MC_ANS},
    "piqa": {
        "q_func": """lambda x: f"Question: {x['goal']}{chr(10)}{chr(10)}Choices:{chr(10)}{x['sol1']}{chr(10)}{x['sol2']}{chr(10)}{chr(10)}Answer:\"""",  # noqa: E501
        "ans_func": """lambda x: " " + (x["sol1"] if x["label"] == 0 else x["sol2"]) + tokenizer.eos_token""",
    },
    "siqa": {
        "q_func": """lambda x: f"Question: Given the context, answer correctly the question.{chr(10)}Context: {x['context']}{chr(10)}Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}(0) {x['answerA']}{chr(10)}(1) {x['answerB']}{chr(10)}(2) {x['answerC']}{chr(10)}{chr(10)}Answer:\"""",  # noqa: E501
        "ans_func": """lambda x: " " + f"({int(x['label']) - 1})" + tokenizer.eos_token""",
    },
}


@dataclasses.dataclass(frozen=True)
class Task:
    """What the authors load for one task and how they validate on it."""

    hub: str  # their `load_dataset` name
    config: str | None  # their `subset`
    columns: tuple[str, ...]  # the columns their functions read
    validation: str  # what they validate on
    wrong_configs: tuple[str, ...] = ()  # sibling configs a path must not point into


TASKS: dict[str, Task] = {
    "ultrafeedback": Task(
        "openbmb/UltraFeedback", None, ("instruction", "completions"), "the last 1000 train rows (val_subset=1000)"
    ),
    "gsm8k": Task("gsm8k", "main", ("question", "answer"), "the test split", ("socratic",)),
    "arc": Task(
        "allenai/ai2_arc", "ARC-Challenge", ("question", "choices", "answerKey"), "the validation split", ("ARC-Easy",)
    ),
    "csqa": Task("tau/commonsense_qa", None, ("question", "choices", "answerKey"), "the validation split"),
    "piqa": Task("piqa", None, ("goal", "sol1", "sol2", "label"), "the validation split"),
    "siqa": Task(
        "social_i_qa", None, ("context", "question", "answerA", "answerB", "answerC", "label"), "the validation split"
    ),
}
_TEXT = {  # columns whose value is text
    "ultrafeedback": ("instruction",),
    "gsm8k": ("question", "answer"),
    "arc": ("question", "answerKey"),
    "csqa": ("question", "answerKey"),
    "piqa": ("goal", "sol1", "sol2"),
    "siqa": ("context", "question", "answerA", "answerB", "answerC"),
}


def _task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


# ---------------------------------------------------------------------------------------------------------------------
# One row: the authors' filter, their text, and the (prompt, response) pair the plain template turns back into it.


def _check_row(task: str, row: Mapping[str, Any], where: str) -> None:
    """Raise a `DataError` naming `where` and the field if `row` cannot go through the authors' functions."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: a row must be an object, got {type(row).__name__}")
    for key in _task(task).columns:
        if key not in row:
            raise DataError(
                f"{where}: missing field {key!r} ({task} reads {list(TASKS[task].columns)}); the row has {sorted(row)}"
            )
    for key in _TEXT[task]:
        if not isinstance(row[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
    if task in ("arc", "csqa"):
        choices = row["choices"]
        if not isinstance(choices, Mapping) or not all(k in choices for k in ("text", "label")):
            raise DataError(
                f"{where}: field 'choices' must be an object with 'text' and 'label' lists, got {choices!r}"
            )
        text, label = choices["text"], choices["label"]
        if not isinstance(text, list) or not isinstance(label, list) or len(text) != len(label) or not text:
            raise DataError(f"{where}: 'choices.text' and 'choices.label' must be lists of one length, got {choices!r}")
        if not all(isinstance(t, str) for t in text):
            raise DataError(f"{where}: 'choices.text' must hold strings, got {text!r}")
        if row["answerKey"] not in label:
            raise DataError(f"{where}: answerKey {row['answerKey']!r} is not one of the choice labels {label}")
    elif task == "piqa":
        if row["label"] not in (0, 1) or isinstance(row["label"], bool | str):
            raise DataError(f"{where}: field 'label' must be 0 or 1 (the train split's labels), got {row['label']!r}")
    elif task == "siqa":
        if str(row["label"]).strip() not in ("1", "2", "3"):
            raise DataError(
                f"{where}: field 'label' must be 1, 2 or 3 (social_i_qa counts from 1), got {row['label']!r}"
            )
    elif task == "ultrafeedback":
        completions = row["completions"]
        if not isinstance(completions, list):
            raise DataError(f"{where}: field 'completions' must be a list, got {type(completions).__name__}")
        for j, c in enumerate(completions):
            if not isinstance(c, Mapping) or "model" not in c:
                raise DataError(f"{where}: completions[{j}] must be an object with 'model' and 'response', got {c!r}")
            if c["model"] == "gpt-4" and not isinstance(c.get("response"), str):
                raise DataError(
                    f"{where}: completions[{j}] (gpt-4) has no 'response' string, got {c.get('response')!r}"
                )


def authors_keep(task: str, row: Mapping[str, Any], where: str = "row") -> dict[str, Any] | None:
    """`row` as the authors' functions see it, or None where they drop it before tokenizing: UltraFeedback's
    `_filter` keeps only the gpt-4 completions (in their order) and drops a row with none; the other tasks keep
    every row as it is."""
    _check_row(task, row, where)
    if task != "ultrafeedback":
        return dict(row)
    completions = [c for c in row["completions"] if c["model"] == "gpt-4"]
    return {**row, "completions": completions} if completions else None


def authors_text(task: str, row: Mapping[str, Any], where: str = "row") -> tuple[str, str]:
    """`(q_func(row), ans_func(row) without the EOS string)`: the authors' functions, literally. Raises a
    `DataError` naming `where` for a row they would drop (UltraFeedback without a gpt-4 completion) or could not
    read."""
    kept = authors_keep(task, row, where)
    if kept is None:
        raise DataError(f"{where}: no gpt-4 completion (the authors drop such rows)")
    return _Q[task](kept), _ANS[task](kept)


def authors_prompt_response(task: str, row: Mapping[str, Any], where: str = "row") -> tuple[str, str]:
    """`(P, R)` with `PLAIN_PROMPT.format(instruction=P) == q` and `" " + R == ans` for the authors'
    `(q, ans) = authors_text(task, row)`: the row `{"prompt": P, "response": R}` for `data.template = "plain"`."""
    q, ans = authors_text(task, row, where)
    if not (q.startswith(PREFIX) and q.endswith(SUFFIX) and len(q) >= len(PREFIX) + len(SUFFIX)):
        raise AssertionError(f"{where}: the authors' prompt is not {PLAIN_PROMPT!r}: {q!r}")
    if not ans.startswith(" "):
        raise AssertionError(f"{where}: the authors' answer does not start with a space: {ans!r}")
    prompt, response = q[len(PREFIX) : len(q) - len(SUFFIX)], ans[1:]
    assert PLAIN_PROMPT.format(instruction=prompt) == q and " " + response == ans
    return prompt, response
