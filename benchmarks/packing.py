"""Sequence packing vs right padding: LoRA and Bitune train steps on SmolLM2-135M-Instruct (float32, CPU), with the
transformers + peft LoRA step on the padded batches beside them.

    python -m benchmarks.packing [--batch 10] [--max-len 512] [--updates 3] [--repeats 2] [--seed 0]

Lengths are shaped like UltraFeedback's, the Bitune paper's instruction data (docs/method.md: the prompt
"Question: {instruction}\\n\\nAnswer:", the first GPT-4 completion as the answer, no chat template). The shape is an
approximation, not a fit: prompt and answer token counts are drawn from log-normals with medians of 80 and 250
tokens (UltraFeedback prompts have a median of roughly 60-100 tokens, its responses roughly 200-300, both with long
tails; approximate figures, not measured here) and log-sigmas 0.9 and 0.75 for the tails. Prompts have at least 2
tokens (Bitune's bidirectional stream needs one), answers at least 1. An example longer than `--max-len` is dropped,
as `data.truncation=drop` does (at 512 about 30% are). Token ids are random in the vocabulary: they do not change
the speed. Lengths and ids come from a fixed seed, so every run times the same batches.

Each update takes `--batch` examples (the paper's 10). The padded batch is `data.pipeline.collate` (one example a row,
width the longest rounded up to 16); the packed one is `data.packing.pack(method="first_fit", multiple=16)` of the same
examples into rows of `--max-len` tokens (with Bitune's packed prompt rows for Bitune). Both JAX layouts run with
`model.remat=dots` by default (`--remat`): without it the padded Bitune step needs ~24 GB of temporaries at 10 x 448
tokens (XLA's memory analysis), more than this 23 GB machine has; the peer keeps every activation. Every shape is
compiled once in a warm-up pass over all the batches (already on the device); a timing is the best of `--repeats`
passes over all of them. Throughput counts real (non-padding) tokens only, the same for every layout, so tokens/s
ratios are time ratios. The peer (transformers + peft: LoRA r8 alpha 16 on the same seven projections,
`torch.optim.AdamW`, gradient clipping at 1.0, float32, torch threads as in benchmarks/generate.py) trains on the
padded batches: attention mask over the padding, labels -100 on the prompt and the padding.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

import bitune_jax as bj
from benchmarks.timing import best_of
from benchmarks.torch_peer import peer_model, peer_steps
from bitune_jax.bitune import BituneConfig
from bitune_jax.data import TokenizedExample
from bitune_jax.data.batch import PackedBatch, SFTBatch
from bitune_jax.data.packing import pack, padding_fraction
from bitune_jax.data.pipeline import collate, round_up
from bitune_jax.models.compute import Compute
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import batch_shardings, make_mesh, tree_shardings
from bitune_jax.train.step import init_state, jit_train_step, make_optimizer, make_schedule

MULTIPLE = 16  # width rounding, as `data.pad_multiple`
# UltraFeedback-like token counts (approximate, see the docstring): log-normal (median, log-sigma).
PROMPT_MEDIAN, PROMPT_SIGMA = 80.0, 0.9
ANSWER_MEDIAN, ANSWER_SIGMA = 250.0, 0.75
LR = 1e-5


def sample_examples(n: int, max_len: int, vocab: int, seed: int) -> tuple[list[TokenizedExample], float]:
    """`n` examples of at most `max_len` tokens with UltraFeedback-like lengths, and the fraction of draws dropped."""
    lengths, ids = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    examples: list[TokenizedExample] = []
    drawn = 0
    while len(examples) < n:
        prompts = np.maximum(2, np.rint(lengths.lognormal(np.log(PROMPT_MEDIAN), PROMPT_SIGMA, 1024))).astype(int)
        answers = np.maximum(1, np.rint(lengths.lognormal(np.log(ANSWER_MEDIAN), ANSWER_SIGMA, 1024))).astype(int)
        for p, a in zip(prompts, answers):
            if len(examples) == n:
                break
            drawn += 1
            if p + a <= max_len:  # data.truncation=drop
                prompt, answer = (ids.integers(3, vocab, k, dtype=np.int32) for k in (p, a))
                examples.append(TokenizedExample(prompt_ids=prompt, answer_ids=answer, source=f"lognormal:{drawn}"))
    return examples, 1.0 - n / drawn


def time_jax(objective: Objective, params, batches: Sequence[SFTBatch | PackedBatch], repeats: int) -> float:
    """Best time of one pass of the jitted train step over `batches`, one compiled step per (layout, widths)."""
    trainable, frozen = objective.split(params, jax.random.key(0))
    trainable = jax.tree.map(jnp.copy, trainable)  # the step donates its state; keep `params` alive
    schedule = make_schedule("constant", LR, 100, 0.0)
    optimizer = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0)
    mesh = make_mesh(devices=jax.devices()[:1])
    state = init_state(trainable, optimizer)
    state_sh, frozen_sh = tree_shardings(state, mesh), tree_shardings(frozen, mesh)
    compiled: dict[tuple, Callable] = {}
    prepared = []
    for batch in batches:
        prompt_width, answer_width = batch.widths(MULTIPLE)
        shardings = batch_shardings(batch, mesh)
        key = (type(batch).__name__, prompt_width, answer_width)
        if key not in compiled:
            compiled[key] = jit_train_step(
                objective,
                optimizer,
                schedule,
                state_sh,
                frozen_sh,
                shardings,
                prompt_width=prompt_width,
                answer_width=answer_width,
            )
        prepared.append((compiled[key], jax.device_put(batch, shardings)))
    holder = [state]

    def run() -> None:
        metrics = None
        for step, batch in prepared:
            holder[0], metrics = step(holder[0], frozen, batch)
        jax.block_until_ready(metrics)

    return best_of(run, repeats)


def time_peer(lm: bj.LM, batches: Sequence[SFTBatch], repeats: int) -> float:
    """Best time of one pass of a transformers + peft LoRA step (AdamW, clipping 1.0) over the padded `batches`."""
    return best_of(peer_steps(peer_model(lm, "peft"), batches, lr=LR), repeats)


def stream_fraction(batch: SFTBatch | PackedBatch, prompt_width: int) -> float:
    """Share of the Bitune bidirectional stream's slots (P - 1 prompt tokens per example) that are padding: rows x
    `prompt_width` unpacked, the stream's own packed rows (`bidir_source`) packed."""
    real = np.asarray(batch.example_id) >= 0
    used = int(np.sum(np.asarray(batch.prompt_len)[real] - 1))
    stream = getattr(batch, "bidir_source", None)
    return 1.0 - used / (np.size(stream) if stream is not None else np.shape(batch.tokens)[0] * prompt_width)


def overall(batches: Sequence[SFTBatch | PackedBatch]) -> float:
    """Padding fraction of all the batches together (per-batch fractions weighted by slots)."""
    sizes = [np.size(b.tokens) for b in batches]
    return sum(padding_fraction(b) * s for b, s in zip(batches, sizes)) / sum(sizes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=10, help="examples per update (the paper's 10)")
    parser.add_argument("--max-len", type=int, default=512, help="longer examples are dropped; packed row length")
    parser.add_argument("--updates", type=int, default=3, help="batches in a timed pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--remat", default="dots", choices=["none", "dots", "full"], help="model.remat of both JAX layouts"
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    lm = bj.load("smollm2-135m-instruct")
    n = args.batch * args.updates
    examples, dropped = sample_examples(n, args.max_len, lm.cfg.vocab_size, args.seed)
    groups = [np.arange(i * args.batch, (i + 1) * args.batch) for i in range(args.updates)]
    padded = [
        collate(examples, ids, round_up(max(examples[i].length for i in ids), MULTIPLE), lm.pad_id) for ids in groups
    ]
    packed = {
        bitune: [
            pack(examples, ids, args.max_len, lm.pad_id, "first_fit", multiple=MULTIPLE, prompt_rows=bitune)
            for ids in groups
        ]
        for bitune in (False, True)
    }
    real_tokens = sum(e.length for e in examples)
    print(
        f"SmolLM2-135M-Instruct float32 on {jax.devices()[0].device_kind}, torch threads {torch.get_num_threads()}; "
        f"{args.updates} updates x {args.batch} examples, max_len {args.max_len} ({dropped:.0%} of draws dropped), "
        f"{real_tokens} real tokens, median prompt {np.median([len(e.prompt_ids) for e in examples]):.0f} / "
        f"answer {np.median([len(e.answer_ids) for e in examples]):.0f} tokens"
    )
    print(f"{'batch':>5} {'tokens':>6} {'padded':>9} {'pad':>5} {'packed':>9} {'pad':>5} {'bitune stream pad':>17}")
    for i, (a, b) in enumerate(zip(padded, packed[True])):
        streams = f"{stream_fraction(a, a.widths(MULTIPLE)[0]):.0%} -> {stream_fraction(b, b.widths(MULTIPLE)[0]):.0%}"
        print(
            f"{i:>5} {int(np.sum(a.length)):>6} {'x'.join(map(str, a.tokens.shape)):>9} {padding_fraction(a):>5.0%} "
            f"{'x'.join(map(str, b.tokens.shape)):>9} {padding_fraction(b):>5.0%} {streams:>17}"
        )

    compute = Compute(remat=args.remat)  # the padded Bitune step needs ~24 GB of temporaries without it (10 x 448)
    objectives = {
        "lora": Objective(kind="peft", cfg=lm.cfg, peft=PeftConfig(rank=8), compute=compute),
        "bitune": Objective(kind="bitune", cfg=lm.cfg, bitune=BituneConfig(peft=PeftConfig(rank=8)), compute=compute),
    }
    seconds: dict[str, float] = {}
    for name, objective in objectives.items():
        for layout, batches in (("padded", padded), ("packed", packed[name == "bitune"])):
            seconds[f"{name}_{layout}"] = time_jax(objective, lm.params, batches, args.repeats)
    seconds["peer_lora_padded"] = time_peer(lm, padded, args.repeats)

    print(f"{'run':<18} {'s/pass':>8} {'tokens/s':>9} {'padding':>8}")
    for run, s in seconds.items():
        fraction = overall(packed[False] if run.endswith("packed") else padded)
        print(f"{run:<18} {s:>8.2f} {real_tokens / s:>9.0f} {fraction:>8.1%}")
    for run, s in seconds.items():
        print(f"{run}_tokens_per_s: {real_tokens / s:.0f}")
        if run.endswith("packed"):
            print(f"{run[: -len('_packed')]}_packed_speedup: {seconds[run.replace('packed', 'padded')] / s:.2f}")
    print(f"lora_packed_vs_peer_speedup: {seconds['peer_lora_padded'] / seconds['lora_packed']:.2f}")
    print(f"padding_fraction_padded: {overall(padded):.3f}")
    print(f"padding_fraction_packed: {overall(packed[False]):.3f}")


if __name__ == "__main__":
    main()
