"""Prefill and decode throughput of SmolLM2-135M-Instruct on this machine: bitune_jax vs transformers (PyTorch).

    python -m benchmarks.generate [--prompt_tokens 256] [--new_tokens 64] [--batch 1] [--repeats 3]

Both run the same float32 weights (ours loaded from the shipped GGUF, exported to a Hugging Face directory that
transformers loads), the same prompt and greedy decoding with EOS disabled. Compilation is excluded (one warm-up).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

import bitune_jax as bj
from bitune_jax.generation import generate_tokens


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompt_tokens", type=int, default=256)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    lm = bj.load(args.model)
    text = open(__file__).read()
    ids = lm.tokenizer.encode(text)[: args.prompt_tokens]
    tokens = np.asarray([ids] * args.batch, np.int32)
    positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
    n_prompt = tokens.size
    print(
        f"device: {jax.devices()[0].device_kind}, torch threads: {torch.get_num_threads()}, "
        f"batch {args.batch}, prompt {tokens.shape[1]} tokens, {args.new_tokens} new tokens"
    )

    def jax_prefill():
        lm.logits(tokens, positions).block_until_ready()

    def jax_generate():
        generate_tokens(
            lm.params,
            jnp.asarray(tokens),
            jnp.asarray(positions),
            jax.random.key(0),
            cfg=lm.cfg,
            max_new_tokens=args.new_tokens,
            eos_ids=(),
            pad_id=lm.pad_id,
        ).tokens.block_until_ready()

    with tempfile.TemporaryDirectory() as tmp:
        lm.save_hf(tmp)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    t_tokens = torch.tensor(tokens, dtype=torch.long)

    def torch_prefill():
        with torch.no_grad():
            model(t_tokens)

    def torch_generate():
        with torch.no_grad():
            model.generate(
                t_tokens,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=lm.pad_id,
            )

    results = {}
    for name, prefill, generate in (("jax", jax_prefill, jax_generate), ("torch", torch_prefill, torch_generate)):
        t_prefill = best_of(prefill, args.repeats)
        t_generate = best_of(generate, args.repeats)
        t_decode = max(t_generate - t_prefill, 1e-9)
        results[name] = (n_prompt / t_prefill, args.batch * args.new_tokens / t_decode)
        print(
            f"{name}: prefill {results[name][0]:.0f} tokens/s, decode {results[name][1]:.1f} tokens/s "
            f"(prefill {t_prefill * 1e3:.0f} ms, prefill+decode {t_generate * 1e3:.0f} ms)"
        )
    print(f"jax prefill tokens/s: {results['jax'][0]:.0f}")
    print(f"jax decode tokens/s: {results['jax'][1]:.1f}")
    print(f"torch prefill tokens/s: {results['torch'][0]:.0f}")
    print(f"torch decode tokens/s: {results['torch'][1]:.1f}")
    print(f"prefill speedup vs torch: {results['jax'][0] / results['torch'][0]:.2f}")
    print(f"decode speedup vs torch: {results['jax'][1] / results['torch'][1]:.2f}")


if __name__ == "__main__":
    main()
