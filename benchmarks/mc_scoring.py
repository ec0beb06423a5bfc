"""Multiple-choice scoring by log-likelihood on SmolLM2-135M-Instruct (CPU): one row per choice vs one row per item.

    python -m benchmarks.mc_scoring [--items 64] [--batch_items 8]

The Bitune study's task (`bitune_jax.tasks.two_hop`, K = 6 facts, 4 one-token color choices) scored by the plain
model and through a Bitune mixed cache (fresh adapters, alpha 0.5), each two ways on the same items:
  * per choice: every (prompt, choice) pair is a row (`score_continuations`), `batch_items` items' choices in one
    forward, as the scorer did before items of one-token choices shared a row;
  * per item: one row per item (`score_next_tokens`) reads every choice's log P from the next-token distribution
    after the prompt, `batch_items` items in one forward (what `score_choices` now does for such items).
Both are timed after a warm-up pass that compiles them. Reported: items/s each way, the speedup, the largest
difference of a choice's log P and whether every predicted choice agrees. Headline figures last, `name: value`.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import bitune_jax as bj
from bitune_jax.bitune import BituneConfig, init_trainable
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.multiple_choice import (
    MCConfig,
    answer_scorer,
    encode_item,
    next_token_scorer,
    score_continuations,
    score_next_tokens,
)
from bitune_jax.tasks import two_hop

SCORING = MCConfig(prompt_format="plain", template="{question}", add_bos=None)  # the Bitune study's


def per_choice(encoded, scorer, batch_items: int, pad_id: int, max_len: int) -> np.ndarray:
    """`[items, choices]` log P, one row per (prompt, choice)."""
    out = []
    for start in range(0, len(encoded), batch_items):
        chunk = encoded[start : start + batch_items]
        pairs = [(e.prompt, c) for e in chunk for c in e.continuations]
        scored = score_continuations(pairs, scorer, pad_id=pad_id, max_len=max_len)
        out.extend(np.reshape([s for s, _ in scored], (len(chunk), -1)))
    return np.asarray(out)


def per_item(encoded, scorer, batch_items: int, pad_id: int, max_len: int) -> np.ndarray:
    """`[items, choices]` log P, one row per item."""
    out = []
    for start in range(0, len(encoded), batch_items):
        chunk = encoded[start : start + batch_items]
        contexts = [(e.prompt, [c[0] for c in e.continuations]) for e in chunk]
        out.extend(score_next_tokens(contexts, scorer, pad_id=pad_id, max_len=max_len))
    return np.asarray(out)


def timed(fn, *args, **kwargs) -> tuple[np.ndarray, float]:
    fn(*args, **kwargs)  # compile
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch_items", type=int, default=8)
    args = parser.parse_args()
    lm = bj.load("smollm2-135m-instruct")
    items = two_hop.mc_items(args.items, seed=0, order="reverse")
    encoded = [encode_item(lm.tokenizer, item, SCORING) for item in items]
    if not all(len(c) == 1 for e in encoded for c in e.continuations):
        raise SystemExit("the benchmark needs one-token choices; this tokenizer splits a color")
    bcfg = BituneConfig()
    trainable = init_trainable(lm.params, lm.cfg, bcfg, jax.random.key(0))
    models = {"plain": lm, "bitune": TrainedModel(lm, "bitune", trainable, bitune=bcfg)}
    scorers = {name: (answer_scorer(m), next_token_scorer(m)) for name, m in models.items()}
    common = dict(batch_items=args.batch_items, pad_id=lm.pad_id, max_len=lm.cfg.max_seq_len)
    print(f"{args.items} two-hop items (K = 6, 4 one-token choices), {args.batch_items} items per forward", flush=True)
    figures = {}
    for name, (rows_scorer, next_scorer) in scorers.items():
        a, t_choice = timed(per_choice, encoded, rows_scorer, **common)
        b, t_item = timed(per_item, encoded, next_scorer, **common)
        agree = bool((a.argmax(1) == b.argmax(1)).all())
        print(f"{name}: per choice {t_choice:.1f} s, per item {t_item:.1f} s; max |d log P| {np.abs(a - b).max():.2e}")
        figures[name] = (args.items / t_choice, args.items / t_item, np.abs(a - b).max(), agree)
    for name, (choice_rate, item_rate, diff, agree) in figures.items():
        print(f"{name} per choice items/s: {choice_rate:.2f}")
        print(f"{name} per item items/s: {item_rate:.2f}")
        print(f"{name} speedup: {item_rate / choice_rate:.2f}")
        print(f"{name} max logprob difference: {diff:.2e}")
        print(f"{name} predictions agree: {agree}")


if __name__ == "__main__":
    main()
