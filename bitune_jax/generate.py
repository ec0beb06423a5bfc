"""Command line: chat with (or continue text from) a model.

python -m bitune_jax.generate --model smollm2-135m-instruct --prompt "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import time

import bitune_jax as bj
from bitune_jax.sampling import SamplingConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="a preset with shipped weights, a Hugging Face directory or a .gguf file",
    )
    parser.add_argument("--prompt", action="append", required=True, help="a user message (repeat the flag for a batch)")
    parser.add_argument("--raw", action="store_true", help="continue the text as is, without the chat template")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(bj.api.DTYPES), default="float32")
    parser.add_argument("--slots", type=int, default=8, help="prompts decoded at once")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1 or args.slots < 1:  # checked before the model loads
        parser.error(f"--max_new_tokens ({args.max_new_tokens}) and --slots ({args.slots}) must be >= 1")
    try:
        SamplingConfig(args.temperature, args.top_p, args.top_k)
    except ValueError as e:
        parser.error(f"--temperature/--top_p/--top_k: {e}")

    lm = bj.load(args.model, dtype=args.dtype)
    tok = lm._require_tokenizer()
    if args.raw:
        prompts = [tok.encode(p) for p in args.prompt]
    else:
        prompts = [bj.chat.encode_chat(tok, [{"role": "user", "content": p}]) for p in args.prompt]
    start = time.perf_counter()
    outputs = lm.generate(
        prompts,
        args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        slots=args.slots,
    )
    seconds = time.perf_counter() - start
    for prompt, out in zip(args.prompt, outputs):
        print(f">>> {prompt}\n{tok.decode(out).strip()}\n")
    total = sum(len(o) for o in outputs)
    print(f"[{total} tokens in {seconds:.1f}s, compilation included]")


if __name__ == "__main__":
    main()
