"""The engine's decode step planned on paper: compiled ahead of time for long slots on a large model, nothing allocated.

    python -m benchmarks.decode_plan     # Olmo-3-7B, bf16, 16 slots x 32,768 tokens: 1 x H100 and 8 x H100 (tensor)
    python -m benchmarks.decode_plan --preset smollm2-135m-instruct --slots 4 --max_len 2048

For each mesh, on simulated host devices: the bf16 weights sharded by the default rules, the slots by
`engine.slot_shardings` (rows over `data`, key/value heads over `tensor`), and `engine.decode` (one step, attention
over the whole cache: the worst case, every slot full) lowered from `ShapeDtypeStruct`s and compiled. Reported per
device: what must stay resident (weights and the KV cache, from the shardings), XLA:CPU's memory analysis
(arguments, temporaries; XLA:CPU upcasts bf16 operands of its dots to float32, so its temporaries overstate what
a GPU compiler needs) and a roofline. A decode step reads
every weight and every cached key and value once, so it takes at least (weight bytes + cache bytes) / HBM bandwidth,
or its FLOPs / the bf16 peak, whichever is larger; tokens/s = slots / that time. Tensor-parallel all-reduces (two of
`[slots, dim]` per layer) are left out: small at decode. Where the slots do not fit, the slots that would fit are
printed (resident memory against the chip's). A plan to check on the first real step, not a measurement of one.
Headline figures last, one per line, as `name: value`.
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules:  # simulated devices must be requested before JAX starts
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse
import math
import time

import jax
import jax.numpy as jnp

from bitune_jax.engine import PlainDecoder, Slots, decode, slot_shardings
from bitune_jax.models import presets
from bitune_jax.models.compute import Compute
from bitune_jax.models.sharding import make_mesh, tree_shardings
from bitune_jax.models.transformer import init_params

GiB = 2**30
H100 = dict(name="H100 SXM", bf16_flops=989e12, hbm_bytes_per_s=3.35e12, memory_gib=80 * 1e9 / GiB)  # datasheet
MESHES = {"1 x H100": dict(tensor=1), "8 x H100 tensor": dict(tensor=8)}


def sharded(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def per_device(tree) -> int:
    """Bytes of `tree`'s shards on one device."""
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def plan(preset: str, slots: int, max_len: int, mesh_axes: dict[str, int]) -> dict[str, float]:
    cfg = presets.get(preset)
    devices = mesh_axes.get("tensor", 1) * mesh_axes.get("data", 1)
    mesh = make_mesh(**mesh_axes, devices=jax.devices()[:devices])
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), jnp.bfloat16))
    state = jax.eval_shape(lambda: Slots.init(cfg, slots, max_len, jnp.bfloat16, eos_width=2))
    decoder = PlainDecoder(cfg, compute=Compute(dtype=jnp.bfloat16))
    per_layer = jax.eval_shape(decoder.step_weights, (params, None))[0]  # what the decode step reads
    weights = (sharded(per_layer, tree_shardings(per_layer, mesh)), None)
    state = sharded(state, slot_shardings(state, mesh))
    start = time.perf_counter()
    compiled = decode.lower(decoder, weights, state, steps=1, window=max_len, sampled=True).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes

    weight_bytes = per_device(weights[0])  # what one device holds and reads each step
    cache_bytes = per_device((state.cache.k, state.cache.v))
    per_device_bytes = weight_bytes + cache_bytes
    matmul_params = sum(x.size for x in jax.tree.leaves(params["layers"])) + cfg.vocab_size * cfg.dim
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * max_len  # q.k and p.v per token
    flops = slots * (2 * matmul_params + attention) / devices
    step_s = max(per_device_bytes / H100["hbm_bytes_per_s"], flops / H100["bf16_flops"])
    per_slot = cache_bytes / slots
    room = H100["memory_gib"] * GiB - weight_bytes
    return {
        "devices": devices,
        "compile_s": compile_s,
        "weights_gib": weight_bytes / GiB,
        "cache_gib": cache_bytes / GiB,
        "arguments_gib": mem.argument_size_in_bytes / GiB,
        "temporaries_gib": mem.temp_size_in_bytes / GiB,
        "total_gib": total / GiB,
        "resident_gib": (weight_bytes + cache_bytes) / GiB,
        "fits": weight_bytes + cache_bytes <= H100["memory_gib"] * GiB,
        "slots_that_fit": max(0, int(room // per_slot)),
        "step_ms": step_s * 1e3,
        "tokens_per_s": slots / step_s,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="olmo3-7b")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--max_len", type=int, default=32_768)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.device_count()} simulated devices; {args.preset}, bf16, {args.slots} slots x "
          f"{args.max_len} tokens, one decode step attending over every slot")  # fmt: skip
    results = {}
    for name, axes in MESHES.items():
        r = results[name] = plan(args.preset, args.slots, args.max_len, axes)
        fit = "fits" if r["fits"] else f"does not fit; {r['slots_that_fit']} slots would"
        print(
            f"{name}: compiled in {r['compile_s']:.0f} s; per device: weights {r['weights_gib']:.1f} GiB + KV cache "
            f"{r['cache_gib']:.1f} = {r['resident_gib']:.1f} resident of {H100['memory_gib']:.1f} ({fit}); XLA:CPU "
            f"total {r['total_gib']:.1f} (temporaries {r['temporaries_gib']:.1f}); roofline step >= "
            f"{r['step_ms']:.1f} ms, <= {r['tokens_per_s']:.0f} tokens/s",
            flush=True,
        )
    print()
    for name, r in results.items():
        print(f"{name} resident GiB per device: {r['resident_gib']:.1f}")
        print(f"{name} slots that fit: {r['slots_that_fit']}")
        print(f"{name} roofline tokens/s: {r['tokens_per_s']:.0f}")


if __name__ == "__main__":
    main()
