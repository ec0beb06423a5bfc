"""Bitune train step on SmolLM2-135M-Instruct (CPU): the fused batched step vs the literal three-call path.

    python -m benchmarks.bitune_step [--batch 8] [--prompt_len 48] [--answer_len 32] [--repeats 3]

Both compute the same loss and gradients (tests/bitune check that to 1e-5) for LoRA rank 8 on every projection,
followed by the same AdamW update. The fused step takes the whole batch in one jitted call (both prompt streams in
one pass over the layers); the literal path is the seed code's: one example at a time (batch 1 by construction),
three model calls each, gradients accumulated over the batch. Every example has the same shape, so the literal path
compiles once. Peak memory is XLA's own account of the compiled step (arguments + outputs + temporaries) less the
frozen base, which both paths hold once.

Both paths do the same arithmetic, so batching can only win what batch-1 programs leave on the table. To show how
much that is on this machine, the benchmark also reports each path's achieved fraction of a measured float32
matmul peak, counting model FLOPs by the PaLM rule with a frozen base (`step_model_flops`) over both streams:
the causal stream over prompt + answer, the bidirectional one over the first P - 1 prompt tokens, the output head
over the answer rows only. (XLA's own cost analysis counts a scanned layer once, so it cannot serve here.)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bitune_jax as bj
from bitune_jax.bitune import BituneConfig, bitune_loss, init_trainable
from bitune_jax.data.batch import SFTBatch
from bitune_jax.train.performance import MatmulWeights, measure_matmul_peak_flops, step_model_flops
from tests.bitune.reference import literal_example


def bitune_step_flops(base, cfg, batch: int, prompt_len: int, answer_len: int) -> float:
    """Model FLOPs of one Bitune LoRA step (frozen base), as the trainer counts them (`step_model_flops`)."""
    rows = SFTBatch(
        tokens=np.zeros((batch, prompt_len + answer_len), np.int32),
        prompt_len=np.full((batch,), prompt_len),
        length=np.full((batch,), prompt_len + answer_len),
    )
    return step_model_flops("bitune", rows, prompt_len - 1, MatmulWeights.of(base, cfg), cfg.num_layers, cfg.dim)


def peak_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt_len", type=int, default=48)
    parser.add_argument("--answer_len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    lm = bj.load("smollm2-135m-instruct")
    cfg, base = lm.cfg, lm.params
    bcfg = BituneConfig()
    trainable = init_trainable(base, cfg, bcfg, jax.random.key(0))
    opt = optax.adamw(3e-4, eps=1e-6, weight_decay=0.0)
    opt_state = opt.init(trainable)
    rng = np.random.RandomState(0)
    pairs = [
        (
            rng.randint(3, cfg.vocab_size, args.prompt_len).tolist(),
            rng.randint(3, cfg.vocab_size, args.answer_len).tolist(),
        )
        for _ in range(args.batch)
    ]
    batch = SFTBatch.from_pairs(pairs, lm.pad_id, cfg.max_seq_len)
    prompt_width, answer_width = batch.widths()
    batch = jax.tree.map(jnp.asarray, batch)
    tokens_per_step = args.batch * (args.prompt_len + args.answer_len)

    # The frozen base is an argument, never a closed-over constant: XLA would otherwise constant-fold through 135M
    # weights at compile time and lay them out as literals.
    @jax.jit
    def fused_step(trainable, opt_state, base, batch):
        (loss, _), grads = jax.value_and_grad(bitune_loss, has_aux=True)(
            trainable, base, batch, cfg, bcfg, prompt_width=prompt_width, answer_width=answer_width
        )
        updates, opt_state = opt.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    @jax.jit
    def literal_grad(trainable, base, prompt, answer):
        def loss(t):
            return literal_example(base, t, prompt, answer, cfg, bcfg)[1]

        return jax.value_and_grad(loss)(trainable)

    @jax.jit
    def apply(trainable, opt_state, grads):
        updates, opt_state = opt.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state

    def literal_step(trainable, opt_state):
        total_loss, total = 0.0, None
        for prompt, answer in pairs:  # batch 1, three model calls per example
            loss, grads = literal_grad(trainable, base, jnp.asarray(prompt), jnp.asarray(answer))
            total_loss += loss
            total = grads if total is None else jax.tree.map(jnp.add, total, grads)
        grads = jax.tree.map(lambda g: g / len(pairs), total)
        trainable, opt_state = apply(trainable, opt_state, grads)
        return trainable, opt_state, total_loss / len(pairs)

    # Peak memory beyond the frozen base, which both paths hold once whatever the batch.
    base_bytes = sum(x.nbytes for x in jax.tree.leaves(base))
    fused_mem = peak_bytes(fused_step.lower(trainable, opt_state, base, batch).compile()) - base_bytes
    literal_mem = (
        peak_bytes(literal_grad.lower(trainable, base, jnp.asarray(pairs[0][0]), jnp.asarray(pairs[0][1])).compile())
        - base_bytes
    )
    step_flops = bitune_step_flops(base, cfg, args.batch, args.prompt_len, args.answer_len)
    peak = measure_matmul_peak_flops(jnp.float32, 1024)

    def timed(step):
        out = step()
        jax.block_until_ready(out)  # warm-up: compile
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(step())
            best = min(best, time.perf_counter() - start)
        return best, float(out[-1])

    t_fused, loss_fused = timed(lambda: fused_step(trainable, opt_state, base, batch))
    t_literal, loss_literal = timed(lambda: literal_step(trainable, opt_state))
    print(
        f"SmolLM2-135M-Instruct, LoRA r8 on all projections, batch {args.batch}, prompt {args.prompt_len} + "
        f"answer {args.answer_len} tokens, float32 on {jax.devices()[0].device_kind}"
    )
    print(f"loss fused {loss_fused:.6f} literal {loss_literal:.6f}")
    print(
        f"fused: {t_fused * 1e3:.0f} ms/step, {tokens_per_step / t_fused:.0f} tokens/s, "
        f"peak {fused_mem / 2**20:.0f} MiB ({fused_mem / args.batch / 2**20:.0f} MiB per example)"
    )
    print(
        f"literal: {t_literal * 1e3:.0f} ms/step, {tokens_per_step / t_literal:.0f} tokens/s, "
        f"peak {literal_mem / 2**20:.0f} MiB (one example at a time)"
    )
    print(
        f"model GFLOP per step (both paths): {step_flops / 1e9:.0f}; measured float32 matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s"
    )
    print(f"fused tokens/s: {tokens_per_step / t_fused:.0f}")
    print(f"literal tokens/s: {tokens_per_step / t_literal:.0f}")
    print(f"speedup fused vs literal: {t_literal / t_fused:.2f}")
    print(f"peak memory per example fused/literal: {fused_mem / args.batch / literal_mem:.2f}")
    print(f"fused fraction of matmul peak: {step_flops / t_fused / peak:.2f}")
    print(f"literal fraction of matmul peak: {step_flops / t_literal / peak:.2f}")
    print(f"speedup ceiling at matmul peak: {t_literal / (step_flops / peak):.2f}")


if __name__ == "__main__":
    main()
