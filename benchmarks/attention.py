"""Pallas flash attention with the Bitune prompt mask vs jax.nn.dot_product_attention, forward and forward+backward.

    python benchmarks/attention.py [--seqs 1024 4096 8192] [--batch 2] [--heads 16] [--kv_heads 4] [--head_dim 128]
    python benchmarks/attention.py --smoke    # CPU: tiny size, Pallas in interpret mode (checks it runs, not speed)

Mask: causal with a bidirectional prefix of half the sequence (the Bitune prompt block), bfloat16. Compared with
`jax.nn.dot_product_attention` given the same mask as an explicit dense `[b, 1, s, s]` boolean (implementation "xla"
and "cudnn"), and with causal cuDNN flash attention (`is_causal=True`, a different and smaller mask: the reference
point for a fused kernel). Times are the median of `--repeats` runs after a compile/warm-up run. Ratios are
`baseline time / Pallas time` (> 1: Pallas faster). Headline figures come last, one per line, as `name: value`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitune_jax.kernels.attention import MaskSpec, dense_mask  # noqa: E402
from bitune_jax.kernels.flash_attention import DEFAULT_BLOCKS, BlockSizes, block_fractions, flash_attention  # noqa: E402


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_impls(spec: MaskSpec, scale: float, blocks: BlockSizes | None, on_gpu: bool):
    mask = dense_mask(spec)[:, None]  # [b, 1, s, s] for jax.nn.dot_product_attention
    sizes = None if blocks is None else {"triton": blocks}  # GPU and CPU interpret both run the Triton family
    impls = {"pallas": lambda q, k, v: flash_attention(q, k, v, spec, scale=scale, block_sizes=sizes)}
    impls["dense_xla"] = lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, mask=mask, scale=scale, implementation="xla"
    )
    if on_gpu:
        impls["dense_cudnn"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, mask=mask, scale=scale, implementation="cudnn"
        )
        impls["causal_cudnn"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, scale=scale, is_causal=True, implementation="cudnn"
        )
    return impls


def fwd_bwd(fn, w):
    def run(q, k, v):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(w)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv_heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--block_sizes", type=int, nargs=4, default=None, metavar=("BQ", "BK", "BQ_BWD", "BK_BWD"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; on CPU, Pallas runs in interpret mode")
    args = parser.parse_args()
    if args.smoke:
        args.seqs, args.batch, args.heads, args.kv_heads, args.head_dim, args.repeats = [96], 1, 2, 1, 64, 2
        if args.block_sizes is None:
            args.block_sizes = [32, 32, 32, 32]
    on_gpu = jax.default_backend() == "gpu"
    blocks = BlockSizes(*args.block_sizes) if args.block_sizes else None
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(
        f"batch {args.batch}, heads {args.heads}/{args.kv_heads} (q/kv), head_dim {args.head_dim}, bfloat16, "
        f"prefix = seq / 2, Pallas blocks {blocks or DEFAULT_BLOCKS['triton']}"
    )
    headline: dict[str, float] = {}
    for seq in args.seqs:
        key = jax.random.split(jax.random.PRNGKey(seq), 4)
        q = jax.random.normal(key[0], (args.batch, seq, args.heads, args.head_dim), jnp.bfloat16)
        k = jax.random.normal(key[1], (args.batch, seq, args.kv_heads, args.head_dim), jnp.bfloat16)
        v = jax.random.normal(key[2], (args.batch, seq, args.kv_heads, args.head_dim), jnp.bfloat16)
        w = jax.random.normal(key[3], q.shape, jnp.bfloat16)
        pos = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (args.batch, seq))
        spec = MaskSpec(q_positions=pos, kv_positions=pos, prefix_len=jnp.full((args.batch,), seq // 2, jnp.int32))
        scale = args.head_dim**-0.5
        fractions = {k: float(x) for k, x in block_fractions(spec, seq, seq, blocks).items()}
        skipped = fractions["skipped"]
        impls = make_impls(spec, scale, blocks, on_gpu)
        outs = {}
        times: dict[str, dict[str, float]] = {}
        for name, fn in impls.items():
            times[name] = {}
            for mode, f in (("fwd", fn), ("fwd+bwd", fwd_bwd(fn, w))):
                try:
                    jitted = jax.jit(f)
                    times[name][mode] = timed(jitted, q, k, v, repeats=args.repeats)
                    if mode == "fwd":
                        outs[name] = np.asarray(jitted(q, k, v), np.float32)
                except Exception as e:  # noqa: BLE001 - e.g. cuDNN rejecting a shape, or out of memory
                    print(f"  S={seq} {name} {mode}: failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
        err = (
            float(np.abs(outs["pallas"] - outs["dense_xla"]).max())
            if {"pallas", "dense_xla"} <= outs.keys()
            else float("nan")
        )
        print(
            f"S={seq}: forward tiles skipped {skipped:.3f}, masked {fractions['partial']:.3f}, mask-free "
            f"{fractions['full']:.3f}; max |pallas - dense_xla| forward {err:.3g}"
        )
        for mode in ("fwd", "fwd+bwd"):
            base = times["pallas"].get(mode)
            row = []
            for name in impls:
                t = times[name].get(mode)
                if t is None:
                    row.append(f"{name} n/a")
                    continue
                ratio = t / base if base else float("nan")
                row.append(f"{name} {t * 1e3:.3f} ms" + ("" if name == "pallas" else f" (x{ratio:.2f})"))
            print(f"  {mode:8s} " + " | ".join(row))
        headline[f"blocks_skipped_S{seq}"] = skipped
        for mode in ("fwd", "fwd+bwd"):
            tag = mode.replace("+", "_")
            base = times["pallas"].get(mode)
            if base is None:
                continue
            headline[f"pallas_{tag}_ms_S{seq}"] = base * 1e3
            for name, label in (("dense_xla", "speedup_vs_dense_xla"), ("dense_cudnn", "speedup_vs_dense_cudnn")):
                if name in times and mode in times[name]:
                    headline[f"{label}_{tag}_S{seq}"] = times[name][mode] / base
            if "causal_cudnn" in times and mode in times["causal_cudnn"]:
                headline[f"time_over_causal_cudnn_{tag}_S{seq}"] = base / times["causal_cudnn"][mode]
    print()
    for name, value in headline.items():
        print(f"{name}: {value:.4g}")


if __name__ == "__main__":
    main()
