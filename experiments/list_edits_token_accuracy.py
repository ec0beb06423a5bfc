"""Teacher-forced token accuracy of a model on list-edit traces at several numbers of edits, before any training.

    python -m experiments.list_edits_token_accuracy [--model runs/list_edits_warmup/model] [--steps 3-5 5-8 8-12]

Why: the repetition v3 pilot gate asked for epoch token accuracy <= 0.9 at one epoch, with the number of edits as
its lever (docs/repetition_study_v3/PREREGISTRATION.md, Changes). This measures whether that lever moves token
accuracy at all: the argmax next-token hit rate over the answer tokens (the trainer's count,
`bitune_jax.losses.masked_token_loss`), the prompt in the chat template, one problem at a time, no padding.
Headline figures last, one `name: value` per line; `--out` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax.numpy as jnp
import numpy as np

import bitune_jax as bj
from bitune_jax.data.tokenize import tokenize_records
from bitune_jax.losses import masked_token_loss
from bitune_jax.tasks import list_edits


def token_accuracy(lm: bj.LM, min_steps: int, max_steps: int, problems: int, seed: int) -> dict:
    records = list_edits.generate(problems, seed=seed, min_steps=min_steps, max_steps=max_steps)
    examples, _ = tokenize_records(records, lm.tokenizer, max_len=lm.cfg.max_seq_len)
    hits = tokens = 0
    for e in examples:
        logits = lm.logits(np.concatenate([e.prompt_ids, e.answer_ids])[None])  # [1, seq, vocab]
        answer = logits[:, len(e.prompt_ids) - 1 : -1]  # the rows that predict the answer tokens
        _, metrics = masked_token_loss(answer, jnp.asarray(e.answer_ids)[None], jnp.ones(answer.shape[:2], bool))
        hits += int(metrics["correct"])
        tokens += int(metrics["tokens"])
    return {"steps": f"{min_steps}-{max_steps}", "token_accuracy": hits / tokens, "answer_tokens": tokens}


def edit_ranges(parser: argparse.ArgumentParser, values: list[str]) -> list[tuple[int, int]]:
    """`--steps` values ("3-5") as (min, max) edits per problem; a malformed one is the parser's error."""
    ranges = []
    for s in values:
        lo, _, hi = s.partition("-")
        if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi)):
            parser.error(f"--steps takes ranges like 3-5 (1 <= min <= max), got {s!r}")
        ranges.append((int(lo), int(hi)))
    return ranges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/list_edits_warmup/model")
    parser.add_argument("--steps", nargs="+", default=["3-5", "5-8", "8-12"], help="min-max edits per problem")
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write the figures here (JSON)")
    args = parser.parse_args()
    ranges = edit_ranges(parser, args.steps)
    lm = bj.load(args.model)
    rows = [token_accuracy(lm, lo, hi, args.problems, args.seed) for lo, hi in ranges]
    if args.out:
        record = {
            "command": "python -m experiments.list_edits_token_accuracy "
            + " ".join(
                f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "out"
            ),
            "rows": rows,
        }
        pathlib.Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for r in rows:
        print(f"{r['steps']} edits: {r['answer_tokens']} answer tokens")
    for r in rows:
        print(f"token_accuracy_{r['steps']}: {r['token_accuracy']:.4f}")


if __name__ == "__main__":
    main()
