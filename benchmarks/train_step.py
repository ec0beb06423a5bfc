"""Train-step throughput, MFU and peak memory: SmolLM2-135M-Instruct full fine-tune and LoRA (CPU), and on a GPU
also a 1B-class Llama config in bf16.

    python -m benchmarks.train_step [--seq 256] [--batch 1 8] [--repeats 3] [--big] [--no-peer]

Beside each step, the step a user would otherwise run: transformers + peft in PyTorch (`benchmarks.torch_peer`, same
weights, batch, AdamW and clipping), whose tokens/s ratios print last.

MFU is model FLOPs (PaLM rule: 6N + 12 L d T per token for full fine-tuning, 4N + ... with a frozen base) over the
measured peak of a jitted square matmul on this machine (not a datasheet number). Peak memory is XLA's account of
the compiled step: arguments + outputs + temporaries, minus donated aliases.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import bitune_jax as bj
from benchmarks.timing import best_of
from benchmarks.torch_peer import peer_model, peer_steps
from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig, RopeConfig
from bitune_jax.models.transformer import init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from bitune_jax.train.performance import MatmulWeights, measure_matmul_peak_flops, step_model_flops
from bitune_jax.train.sharding import BATCH, make_mesh, tree_shardings
from bitune_jax.train.step import init_state, jit_train_step, make_optimizer, make_schedule


def llama_1b() -> ModelConfig:
    """Llama-3.2-1B's shape (random weights: throughput does not depend on them)."""
    return ModelConfig(
        family="llama",
        vocab_size=128256,
        dim=2048,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        mlp_dim=8192,
        rope=RopeConfig(theta=500000.0),
        max_seq_len=8192,
    )


def bench(name, cfg, params, kind, dtype, seq, batch, repeats, peak, remat="none"):
    objective = Objective(
        kind=kind,
        cfg=cfg,
        peft=PeftConfig(rank=8) if kind == "peft" else None,
        compute=Compute(dtype=dtype, remat=remat),
    )
    trainable, frozen = objective.split(params, jax.random.key(0))
    trainable = jax.tree.map(jnp.copy, trainable)  # the step donates its state; keep `params` alive
    schedule = make_schedule("constant", 1e-5, 100, 0.0)
    optimizer = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0)
    mesh = make_mesh(devices=jax.devices()[:1])
    state = init_state(trainable, optimizer)
    state_sh, frozen_sh = tree_shardings(state, mesh), tree_shardings(frozen, mesh)
    step = jit_train_step(objective, optimizer, schedule, state_sh, frozen_sh, jax.sharding.NamedSharding(mesh, BATCH))
    rng = np.random.RandomState(0)
    data = SFTBatch(
        tokens=jnp.asarray(rng.randint(0, cfg.vocab_size, (batch, seq)), jnp.int32),
        prompt_len=jnp.full((batch,), seq // 8, jnp.int32),
        length=jnp.full((batch,), seq, jnp.int32),
    )
    compiled = step.lower(state, frozen, data).compile()
    m = compiled.memory_analysis()
    peak_bytes = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    state, metrics = compiled(state, frozen, data)
    jax.block_until_ready(metrics)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, frozen, data)
        jax.block_until_ready(metrics)
        best = min(best, time.perf_counter() - start)
    tokens_per_s = batch * seq / best
    flops = step_model_flops(kind, data, 0, MatmulWeights.of(params, cfg), cfg.num_layers, cfg.dim) / (batch * seq)
    mfu = tokens_per_s * flops / peak
    print(
        f"{name}: {best * 1e3:.0f} ms/step, {tokens_per_s:.0f} tokens/s, MFU {mfu:.1%}, "
        f"peak memory {peak_bytes / 2**30:.2f} GiB",
        flush=True,
    )
    return tokens_per_s, mfu, peak_bytes


def peer_tokens_per_s(lm: bj.LM, kind: str, seq: int, batch: int, repeats: int) -> float:
    """transformers (+ peft) tokens/s on the same random batch: `benchmarks.torch_peer`."""
    rng = np.random.RandomState(0)
    data = SFTBatch(
        tokens=jnp.asarray(rng.randint(0, lm.cfg.vocab_size, (batch, seq)), jnp.int32),
        prompt_len=jnp.full((batch,), seq // 8, jnp.int32),
        length=jnp.full((batch,), seq, jnp.int32),
    )
    best = best_of(peer_steps(peer_model(lm, kind), [data]), repeats)
    tokens_per_s = batch * seq / best
    print(f"torch {kind} batch {batch}: {best * 1e3:.0f} ms/step, {tokens_per_s:.0f} tokens/s", flush=True)
    return tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also the 1B-class config (meant for a GPU)")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip transformers + peft")
    args = parser.parse_args()
    on_cpu = jax.default_backend() == "cpu"
    dtype = jnp.float32 if on_cpu else jnp.bfloat16
    peak = measure_matmul_peak_flops(dtype, 1024 if on_cpu else 8192)
    print(
        f"device: {jax.devices()[0].device_kind}; measured matmul peak {peak / 1e12:.3f} TFLOP/s "
        f"({jnp.dtype(dtype).name}); batches {args.batch} x {args.seq} tokens; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}",
        flush=True,
    )
    lm = bj.load("smollm2-135m-instruct")
    results, peers = {}, {}
    for batch in args.batch:
        for kind in ("full", "peft"):
            results[f"{kind} batch {batch}"] = bench(
                f"smollm2 {kind} batch {batch}", lm.cfg, lm.params, kind, dtype, args.seq, batch, args.repeats, peak
            )
            if args.peer:
                peers[f"{kind} batch {batch}"] = peer_tokens_per_s(lm, kind, args.seq, batch, args.repeats)
    if args.big or not on_cpu:
        cfg = llama_1b()
        params = init_params(cfg, jax.random.key(0), dtype=jnp.float32)
        results["1b"] = bench("llama-1b full", cfg, params, "full", dtype, 2048, 8, args.repeats, peak, "dots")
    device_stats = jax.devices()[0].memory_stats()  # None on CPU
    for name, (tps, mfu, mem) in results.items():
        print(f"{name} tokens/s: {tps:.0f}")
        print(f"{name} MFU: {mfu:.3f}")
        print(f"{name} peak memory GiB: {mem / 2**30:.2f}")
    if device_stats and "peak_bytes_in_use" in device_stats:  # what the device saw, beside what XLA planned
        print(f"device peak memory GiB: {device_stats['peak_bytes_in_use'] / 2**30:.2f}")
    for name, tps in peers.items():
        print(f"torch {name} tokens/s: {tps:.0f}")
    for name, tps in peers.items():
        print(f"{name} vs torch: {results[name][0] / tps:.2f}")


if __name__ == "__main__":
    main()
