"""Single-step scoring for the list-edits task (`list_edits`): can a model do one edit on one list?

The pilot gate of the repetition study: greedy answers to `single_step_items`, read with `parse_list` and compared
exactly (`verdict`: correct, wrong order, wrong words, or no list), optionally after a few worked examples in the
chat (`shots`), with accuracy per op and family. `experiments/list_edits_pilot.py` runs it on the untrained model,
`experiments/list_edits_warmup.py` before and after the single-step warm-up.
"""

from __future__ import annotations

import collections
import re

import numpy as np

from bitune_jax.chat import encode_chat
from bitune_jax.tasks import list_edits

BRACKETED = re.compile(r"\[([^\[\]\n]*)\]")


def any_list(text: str, gold: list[str]) -> bool:
    """Lenient: some bracketed list in the output is the gold one (forgives restating the old list first)."""
    return any(list_edits.parse_list(f"[{inside}]") == gold for inside in BRACKETED.findall(text))


def verdict(pred: list[str] | None, gold: list[str]) -> str:
    """Why an answer is wrong: no list, other words (dropped/added/misspelt), or the right words in the wrong order."""
    if pred is None:
        return "no_list"
    if pred == gold:
        return "correct"
    return "wrong_order" if sorted(pred) == sorted(gold) else "wrong_words"


def chat_messages(item: dict, shots: list[dict]) -> list[dict]:
    messages = []
    for s in shots:
        messages += [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["gold"]}]
    return [*messages, {"role": "user", "content": item["prompt"]}]


def generate_texts(lm, prompts: list[list[int]], batch: int, max_new_tokens: int) -> list[str]:
    """Greedy continuations, `batch` decoded at a time."""
    return [lm.tokenizer.decode(ids) for ids in lm.generate(prompts, max_new_tokens, slots=batch)]


def score_single_steps(lm, items: list[dict], shot_pool: list[dict], *, shots: int, seed: int, batch: int, new: int):
    """One prompting condition: per-item outputs and verdicts, the lenient accuracy, the mean prompt length."""
    rng = np.random.default_rng([seed, shots])
    prompts = []
    for item in items:
        chosen = [shot_pool[j] for j in rng.choice(len(shot_pool), shots, replace=False)] if shots else []
        prompts.append(encode_chat(lm.tokenizer, chat_messages(item, chosen), add_generation_prompt=True))
    texts = generate_texts(lm, prompts, batch, new)
    verdicts = [verdict(list_edits.parse_list(t), item["after"]) for t, item in zip(texts, items, strict=True)]
    lenient = float(np.mean([any_list(t, item["after"]) for t, item in zip(texts, items, strict=True)]))
    return texts, verdicts, lenient, float(np.mean([len(p) for p in prompts]))


def print_accuracy_table(items: list[dict], by_condition: dict[str, list[str]]) -> None:
    """Accuracy per op and per family, one column per condition, and the error kinds."""
    names = list(by_condition)
    print(f"{'group':<24}" + "".join(f"{n:>12}" for n in names) + f"{'n':>6}")
    groups = [("all", lambda it: True)]
    groups += [(f"op={op}", lambda it, op=op: it["op"] == op) for op in list_edits.OPS]
    groups += [(f"family={f}", lambda it, f=f: it["family"] == f) for f in list_edits.FAMILIES]
    groups += [
        (f"{f}/{op}", lambda it, f=f, op=op: it["family"] == f and it["op"] == op)
        for f in list_edits.FAMILIES
        for op in list_edits.OPS
    ]
    for label, keep in groups:
        rows = [i for i, it in enumerate(items) if keep(it)]
        accs = [np.mean([by_condition[n][i] == "correct" for i in rows]) for n in names]
        print(f"{label:<24}" + "".join(f"{a:>12.2f}" for a in accs) + f"{len(rows):>6}")
    for n in names:
        print(f"errors {n}: {dict(collections.Counter(by_condition[n]))}")
