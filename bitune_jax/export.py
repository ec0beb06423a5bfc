"""Command line: export a trained run as a Hugging Face model directory, for vLLM or transformers.

python -m bitune_jax.export runs/smollm2_rep exported/ [--step N] [--model BASE] [--temperature 0.6 --top_p 0.95]

The run's newest checkpoint (or `--step`) on its base, PEFT adapters merged in: `model.safetensors`, `config.json`,
the tokenizer and its chat template, and `generation_config.json` with the special token ids and the sampling
defaults (the repetition paper's: temperature 0.6, top-p 0.95). Those defaults matter: the authors' `eval.py` samples
with the exported `generation_config.json`'s temperature and top-p when the file exists (transformers' defaults,
1.0 and 1.0, when it names none), and vLLM reads them as its defaults too. A Bitune run has no such form:
its answers are decoded from a prompt cache mixed out of two prompt passes with two adapter sets, which vLLM's
one-pass prefill cannot build; evaluate it with this project's engine (`bitune_jax.eval`, lm-eval's `--model
bitune_jax`), which decodes from the mixed cache.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from bitune_jax.train.restore import restore_run

BITUNE_HAS_NO_EXPORT = (
    "{run} is a Bitune run: it has no merged Hugging Face form. Its answers are decoded from a prompt cache mixed "
    "out of a causal and a bidirectional prompt pass, each with its own adapter set, and vLLM (like any engine "
    "that prefills a prompt once, causally) cannot build that cache. Evaluate it with bitune_jax instead: "
    "bitune_jax.eval.evaluate(restore_run('{run}'), ...) or python -m bitune_jax.eval.harness --model bitune_jax "
    "--model_args run={run}, both decoding from the mixed cache on the project's engine."
)


def export_run(
    workdir: str | pathlib.Path,
    out: str | pathlib.Path,
    step: int | None = None,
    model: str | None = None,
    temperature: float = 0.6,
    top_p: float = 0.95,
) -> pathlib.Path:
    """The run's weights (PEFT merged) as a Hugging Face directory at `out`, sampling with `temperature` and
    `top_p` by default (temperature 0: greedy); returns the directory."""
    if not 0 <= temperature < float("inf") or not 0 < top_p <= 1:
        raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
    trained = restore_run(workdir, step, model=model)
    if trained.kind == "bitune":
        raise ValueError(BITUNE_HAS_NO_EXPORT.format(run=workdir))
    out = trained.merged().save_hf(out)
    path = out / "generation_config.json"
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else {"do_sample": False}
    path.write_text(json.dumps({**json.loads(path.read_text()), **sampling}, indent=2))
    return out


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run's workdir")
    parser.add_argument("out", help="the directory to write")
    parser.add_argument("--step", type=int, default=None, help="a checkpoint's step (default: the newest)")
    parser.add_argument("--model", default=None, help="the base model, if it moved since the run")
    parser.add_argument("--temperature", type=float, default=0.6, help="the sampling default written (0: greedy)")
    parser.add_argument("--top_p", type=float, default=0.95)
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run, args.out, args.step, args.model, args.temperature, args.top_p)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"exported {args.run} to {out}")
    return out


if __name__ == "__main__":
    main()
