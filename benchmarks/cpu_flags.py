"""CPU training throughput under XLA:CPU's optional code paths, one flag set at a time, side by side.

    python -m benchmarks.cpu_flags [--seq 256] [--batch 1] [--repeats 3] [--rounds 2] [--only NAME ...]

XLA reads `XLA_FLAGS` when the backend starts, so each setting runs `benchmarks.train_step` (SmolLM2-135M-Instruct,
full fine-tune and LoRA, float32, batch 1 by default, without the PyTorch peer) in a child process, alternating the
order over `--rounds`; the best tokens/s of each setting is reported, with its ratio to the default. The flags tried
are the ones jax 0.10's XLA:CPU offers for matmuls and vector code (found in `libjax_common.so`): XNNPACK and oneDNN
paths, 512-bit vectors on AVX-512 machines, the concurrency-optimized scheduler, fast math. A flag this XLA does not
know makes the child fail, which is reported as such.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

SETTINGS = {
    "default": "",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "onednn": "--xla_cpu_use_onednn=true",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
}


def run_child(flags: str, seq: int, batches: list[int], repeats: int) -> dict[str, float]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), flags) if f)
    cmd = [sys.executable, "-m", "benchmarks.train_step", f"--seq={seq}", f"--repeats={repeats}", "--no-peer"]
    cmd += ["--batch", *map(str, batches)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"XLA_FLAGS={flags!r}: {out.stderr.strip().splitlines()[-1:]}")
    figures = {m[1]: float(m[2]) for m in re.finditer(r"^([\w ]+ tokens/s): ([\d.]+)$", out.stdout, re.M)}
    losses = re.findall(r"^smollm2 [\w ]+: .*$", out.stdout, re.M)
    print("\n".join(f"  {line}" for line in losses), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="settings to try besides the default")
    args = parser.parse_args()
    names = ["default", *(n for n in SETTINGS if n != "default" and (args.only is None or n in args.only))]
    best: dict[str, dict[str, float]] = {name: {} for name in names}
    failed: dict[str, str] = {}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else list(reversed(names)):
            if name in failed:
                continue
            try:
                figures = run_child(SETTINGS[name], args.seq, args.batch, args.repeats)
            except RuntimeError as e:
                failed[name] = str(e)
                print(f"round {r + 1} {name}: failed: {e}", flush=True)
                continue
            print(f"round {r + 1} {name}: {figures}", flush=True)
            for k, v in figures.items():
                best[name][k] = max(best[name].get(k, 0.0), v)
    for name in names:
        for k, v in best[name].items():
            print(f"{name} {k}: {v:.0f}")
    for name in names[1:]:
        for k, v in best[name].items():
            print(f"{name} vs default ({k}): {v / best['default'][k]:.2f}")


if __name__ == "__main__":
    main()
