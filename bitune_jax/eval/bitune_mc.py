"""The Bitune authors' zero-shot multiple-choice tasks (PIQA, ARC, CommonsenseQA, SIQA, MMLU) as their modified
lm-evaluation-harness renders them (`tasks/{piqa,arc,csqa,siqa}/*_full.yaml`, `tasks/mmlu/default`): the training
format with the choices listed, `"Question: ...\\n\\nChoices:\\n...\\n\\nAnswer:"`, each choice scored as
`" " + choice`, SIQA and MMLU scoring the choice numbers `(0)`, `(1)`, ... instead of their texts, MMLU after its
subject line, and BOS always on (`AUTHORS_MC`). The prompt/answer boundary of the Bitune streams is the
context/continuation split, as in their harness (`prompt_lengths = len(context)`).

Rows are the Hugging Face datasets' own columns, one JSON object a line (e.g. `dataset.to_json(path)`):
  * `piqa`: `goal`, `sol1`, `sol2`, `label` (0 or 1)
  * `arc`, `csqa`: `question`, `choices: {text: [...], label: [...]}`, `answerKey`
  * `siqa` (social_i_qa): `context`, `question`, `answerA`, `answerB`, `answerC`, `label` ("1" to "3")
  * `mmlu`: `question`, `choices` (4), `answer` (0-3), `subject` (e.g. "abstract_algebra")
Errors name the file, line and field. ARC is the Challenge set (their `arc_full.yaml`: `allenai/ai2_arc`,
`ARC-Challenge`, scored on its test split). `summarize_task` reports MMLU micro (the authors' number) and macro.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bitune_jax.data.records import DataError, jsonl_rows
from bitune_jax.eval.datasets import MCItem, distinct_choices, row_field, string_list
from bitune_jax.eval.multiple_choice import MCConfig, MCScore, summarize

# The prompt is the whole rendered context, BOS forced (their huggingface.py sets add_bos_token = True).
AUTHORS_MC = MCConfig(prompt_format="plain", template="{question}", add_bos=True)


def _listed(question: str, choices: list[str]) -> str:
    return f"Question: {question}\n\nChoices:\n" + "\n".join(choices) + "\n\nAnswer:"


def _piqa(row: Mapping[str, Any], where: str) -> tuple[str, list[str], int]:
    goal, sol1, sol2 = (row_field(row, k, where) for k in ("goal", "sol1", "sol2"))
    label = row_field(row, "label", where, int)
    if label not in (0, 1):
        raise DataError(f"{where}: field 'label' must be 0 or 1, got {label}")
    return _listed(goal, [sol1, sol2]), [sol1, sol2], label


def _arc(row: Mapping[str, Any], where: str) -> tuple[str, list[str], int]:
    question = row_field(row, "question", where)
    choices = row_field(row, "choices", where, dict)
    texts = string_list(choices, "text", f"{where}: choices", min_n=2)
    labels = string_list(choices, "label", f"{where}: choices", n=len(texts))
    key = row_field(row, "answerKey", where)
    if key not in labels:
        raise DataError(f"{where}: answerKey {key!r} is not one of the choice labels {labels}")
    return _listed(question, distinct_choices(texts, where)), texts, labels.index(key)


def _siqa(row: Mapping[str, Any], where: str) -> tuple[str, list[str], int]:
    context, question = row_field(row, "context", where), row_field(row, "question", where)
    answers = [row_field(row, f"answer{x}", where) for x in "ABC"]
    label = row_field(row, "label", where, (str, int))
    if str(label).strip() not in ("1", "2", "3"):
        raise DataError(f"{where}: field 'label' must be 1, 2 or 3 (social_i_qa counts from 1), got {label!r}")
    listed = "\n".join(f"({i}) {a}" for i, a in enumerate(distinct_choices(answers, where)))
    prompt = (
        "Question: Given the context, answer correctly the question.\n"
        f"Context: {context}\nQuestion: {question}\n\nChoices:\n{listed}\n\nAnswer:"
    )
    return prompt, ["(0)", "(1)", "(2)"], int(str(label).strip()) - 1


def _mmlu(row: Mapping[str, Any], where: str) -> tuple[str, list[str], int]:
    question, subject = row_field(row, "question", where), row_field(row, "subject", where)
    choices = distinct_choices(string_list(row, "choices", where, n=4), where)
    answer = row_field(row, "answer", where, int)
    if not 0 <= answer < 4:
        raise DataError(f"{where}: field 'answer' must be 0-3, got {answer}")
    listed = "\n".join(f"({i}). {c}" for i, c in enumerate(choices))
    prompt = (
        f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        f"Question: {question.strip()}\n{listed}\n\nAnswer:"
    )
    return prompt, ["(0)", "(1)", "(2)", "(3)"], answer


TASKS: dict[str, Callable[[Mapping[str, Any], str], tuple[str, list[str], int]]] = {
    "piqa": _piqa,
    "arc": _arc,
    "csqa": _arc,  # the same columns and template (tasks/csqa/csqa_full.yaml)
    "siqa": _siqa,
    "mmlu": _mmlu,
}


def read_bitune_task(path: str | pathlib.Path, task: str) -> list[MCItem]:
    """The rows of `path` (the task's Hugging Face columns) as items in the authors' format; score them with
    `score_choices(model, items, AUTHORS_MC)` (a plain, PEFT or Bitune model)."""
    if task not in TASKS:
        raise ValueError(f"unknown Bitune task {task!r}; choose one of {', '.join(TASKS)}")
    render = TASKS[task]
    items = []
    for file, line, row in jsonl_rows(path):
        where = f"{file}:{line}"
        prompt, choices, label = render(row, where)
        meta = {"task": task, **({"subject": row["subject"]} if task == "mmlu" else {})}
        items.append(MCItem(question=prompt, choices=tuple(choices), label=label, file=file, line=line, meta=meta))
    if not items:
        raise DataError(f"{path}: no rows")
    return items


def summarize_task(items: Sequence[MCItem], scores: Sequence[MCScore]) -> dict[str, Any]:
    """`multiple_choice.summarize`, plus for MMLU both averages: micro over questions (`accuracy`, what the authors'
    harness reports: its mmlu group weights subtasks by size) and macro over subjects (`accuracy_macro`, the
    repetition paper's forgetting average), for both the summed and the length-normalized score."""
    if len(items) != len(scores):
        raise ValueError(f"{len(items)} items but {len(scores)} scores")
    out = summarize(scores)
    by_subject: dict[str, list[MCScore]] = {}
    for item, score in zip(items, scores):
        if "subject" in item.meta:
            by_subject.setdefault(item.meta["subject"], []).append(score)
    if by_subject:
        per = {name: summarize(group) for name, group in sorted(by_subject.items())}
        out["accuracy_micro"] = out["accuracy"]
        out["accuracy_macro"] = float(np.mean([p["accuracy"] for p in per.values()]))
        out["accuracy_norm_macro"] = float(np.mean([p["accuracy_norm"] for p in per.values()]))
        out["subjects"] = {name: p["accuracy"] for name, p in per.items()}
    return out
