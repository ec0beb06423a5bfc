"""Generation speed of SmolLM2-135M-Instruct on this machine: bitune_jax vs transformers (PyTorch).

    python -m benchmarks.generate [--prompt_tokens 256] [--new_tokens 64] [--batch 1] [--repeats 3]
    python -m benchmarks.generate --workload reasoning [--prompts 64] [--n 4] [--new_tokens 512] [--batch 16]

`decode` (the default): prefill and decode throughput, the same prompt in every row, greedy, EOS disabled: the
static path (`jax`), the engine (each row a request) and transformers.
`reasoning`: a reasoning eval as the repetition paper runs one (avg@n sampling at temperature 0.6, top-p 0.95,
lengths set by EOS) on the project's synthetic long-CoT arithmetic prompts in SmolLM2's chat template. Three
contenders generate the same prompts x n samples with `--batch` rows at a time: the engine (continuous batching,
`--batch` slots, one prefill per prompt), the static path it replaces (`generate_tokens` on batches of rows, each
batch decoding until its longest row ends) and transformers `generate` (the same batches, left-padded). Figures:
generated tokens (EOS included) per second of wall time, and the wall time.

Both libraries run the same float32 weights (ours loaded from the shipped GGUF, exported to a Hugging Face
directory that transformers loads). Compilation is excluded (one warm-up call of every program first).
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
from benchmarks.timing import best_of
from bitune_jax.generation import generate_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompt_tokens", type=int, default=256)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workload", choices=("decode", "reasoning"), default="decode")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.workload == "reasoning":
        return reasoning(args)

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

    from bitune_jax.engine import Engine, PlainDecoder, Request

    engine = Engine(PlainDecoder(lm.cfg, compute=lm.compute), (lm.params, None), slots=args.batch, eos_ids=())

    def engine_prefill():  # each row prefilled (a request of its own), its first token drawn
        engine.run([Request(ids, 1) for _ in range(args.batch)])

    def engine_generate():
        engine.run([Request(ids, args.new_tokens) for _ in range(args.batch)])

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
    contenders = (
        ("jax", jax_prefill, jax_generate),  # the static path
        ("engine", engine_prefill, engine_generate),
        ("torch", torch_prefill, torch_generate),
    )
    for name, prefill, generate in contenders:
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
    print(f"engine prefill tokens/s: {results['engine'][0]:.0f}")
    print(f"engine decode tokens/s: {results['engine'][1]:.1f}")
    print(f"prefill speedup vs torch: {results['jax'][0] / results['torch'][0]:.2f}")
    print(f"decode speedup vs torch: {results['jax'][1] / results['torch'][1]:.2f}")
    print(f"engine prefill speedup vs torch: {results['engine'][0] / results['torch'][0]:.2f}")
    print(f"engine decode speedup vs torch: {results['engine'][1] / results['torch'][1]:.2f}")


def reasoning(args) -> None:
    from bitune_jax.chat import encode_chat
    from bitune_jax.engine import Engine, PlainDecoder, Request
    from bitune_jax.tasks import arithmetic

    lm = bj.load(args.model)
    tok, eos = lm.tokenizer, tuple(lm.eos_ids)
    records = arithmetic.generate(args.prompts, seed=1234)
    prompts = [encode_chat(tok, r.messages[:-1]) for r in records]  # the question; the model writes the answer
    rows = [p for p in prompts for _ in range(args.n)]  # question-major, as the reasoning eval lays them out
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    settings = dict(temperature=0.6, top_p=0.95)
    print(
        f"device: {jax.devices()[0].device_kind}, torch threads: {torch.get_num_threads()}, {args.prompts} prompts "
        f"({min(map(len, prompts))}-{max(map(len, prompts))} tokens) x n={args.n}, max_new_tokens "
        f"{args.new_tokens}, {args.batch} rows at a time, temperature 0.6, top-p 0.95"
    )

    def until_eos(row) -> int:
        row = list(row)
        return next((i + 1 for i, t in enumerate(row) if t in eos), len(row))

    multiple = 64  # the engine's prompt widths; the static batches all take the widest prompt's
    width = -(-max(map(len, prompts)) // multiple) * multiple
    engine = Engine(
        PlainDecoder(lm.cfg, compute=lm.compute),
        (lm.params, None),
        slots=args.batch,
        max_len=width + args.new_tokens,
        eos_ids=eos,
        prompt_multiple=multiple,
    )

    def engine_run(requests):
        return sum(len(s) for c in engine.run(requests) for s in c.tokens)

    def static_batch(batch, seed):
        tokens = np.full((args.batch, width), lm.pad_id, np.int32)  # one shape for every batch: one compilation
        positions = np.full((args.batch, width), -1, np.int32)
        for i, p in enumerate(batch):
            tokens[i, width - len(p) :], positions[i, width - len(p) :] = p, np.arange(len(p))
        out = generate_tokens(
            lm.params,
            jnp.asarray(tokens),
            jnp.asarray(positions),
            jax.random.key(seed),
            cfg=lm.cfg,
            max_new_tokens=args.new_tokens,
            sampling=bj.SamplingConfig(**settings),
            eos_ids=eos,
            pad_id=lm.pad_id,
        )
        return int(np.sum(np.asarray(out.lengths)[: len(batch)]))

    with tempfile.TemporaryDirectory() as tmp:
        lm.save_hf(tmp)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()

    def torch_batch(batch, seed, new_tokens=args.new_tokens):
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):
            ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=mask,
                do_sample=True,
                max_new_tokens=new_tokens,
                eos_token_id=list(eos),
                pad_token_id=lm.pad_id,
                **settings,
            )
        return sum(until_eos(row) for row in out[:, width:].tolist())

    requests = [Request(p, args.new_tokens, n=args.n, seed=q, **settings) for q, p in enumerate(prompts)]
    widths = {-(-len(p) // multiple) * multiple: p for p in prompts}  # one prompt of each prefill width
    contenders = {
        "engine": (  # every prefill width, and one sample run to the budget: every attention window it compiles
            lambda: engine_run(
                [Request(p, 2, **settings) for p in widths.values()]
                + [Request(prompts[0], args.new_tokens, eos_ids=(), **settings)]
            ),
            lambda: engine_run(requests),
        ),
        "static": (lambda: static_batch(batches[0], 0), lambda: sum(static_batch(b, s) for s, b in enumerate(batches))),
        "transformers": (
            lambda: torch_batch(batches[0], 0, 8),
            lambda: sum(torch_batch(b, s) for s, b in enumerate(batches)),
        ),
    }
    results = {}
    for name, (warm, run) in contenders.items():
        warm()  # compiles every program the timed run uses
        start = time.perf_counter()
        generated = run()
        wall = time.perf_counter() - start
        results[name] = (generated / wall, wall)
        print(f"{name}: {generated} tokens generated in {wall:.1f} s = {generated / wall:.1f} tokens/s", flush=True)
    for name, (rate, wall) in results.items():
        print(f"{name} tokens/s: {rate:.1f}")
        print(f"{name} wall s: {wall:.1f}")
    print(f"engine vs static: {results['engine'][0] / results['static'][0]:.2f}")
    print(f"engine vs transformers: {results['engine'][0] / results['transformers'][0]:.2f}")


if __name__ == "__main__":
    main()
