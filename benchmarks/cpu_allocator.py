"""CPU training throughput under glibc's default malloc vs transparent-huge-page-backed malloc.

    python -m benchmarks.cpu_allocator [--seq 256] [--repeats 3] [--rounds 2]

XLA:CPU allocates a step's large buffers (activations, logits) with malloc; glibc serves each with a fresh `mmap`
and returns it on free, so every step faults its working set in again, 4 KiB at a time, zeroing each page in the
kernel. Where transparent huge pages are in `madvise` mode (the common default: `cat
/sys/kernel/mm/transparent_hugepage/enabled`), `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc 2.35+) has malloc ask
for huge pages, so the same bytes fault in 2 MiB at a time. It changes where the buffers live, not what is computed:
the losses are equal. It must be set before the process starts, so this benchmark runs `benchmarks.train_step`
(SmolLM2-135M-Instruct, full fine-tune and LoRA) in a child process under each setting, alternating the order over
`--rounds`, and reports each setting's best tokens/s and the children's kernel (system) CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys

HUGE_PAGES = "glibc.malloc.hugetlb=1"
SETTINGS = {"default": None, "hugetlb": HUGE_PAGES}


def run_child(tunables: str | None, seq: int, repeats: int) -> tuple[dict[str, float], float]:
    """`benchmarks.train_step`'s headline figures under one malloc setting, and the child's system CPU seconds."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    cmd = [sys.executable, "-m", "benchmarks.train_step", f"--seq={seq}", f"--repeats={repeats}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    system = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed under GLIBC_TUNABLES={tunables}:\n{out.stderr[-3000:]}")
    figures = {m[1]: float(m[2]) for m in re.finditer(r"^(\w+ tokens/s): ([\d.]+)$", out.stdout, re.M)}
    if not figures:
        raise RuntimeError(f"no 'tokens/s' figures in the output of {' '.join(cmd)}:\n{out.stdout[-3000:]}")
    return figures, system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting, in alternating order")
    args = parser.parse_args()
    try:
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
    except OSError:
        thp = "unknown"
    print(f"transparent huge pages: {thp}", flush=True)
    best: dict[str, dict[str, float]] = {name: {} for name in SETTINGS}
    system: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            figures, sys_s = run_child(SETTINGS[name], args.seq, args.repeats)
            print(f"round {r + 1} {name}: {figures}, system CPU {sys_s:.1f} s", flush=True)
            system[name].append(sys_s)
            for k, v in figures.items():
                best[name][k] = max(best[name].get(k, 0.0), v)
    for name in SETTINGS:
        for k, v in best[name].items():
            print(f"{name} {k}: {v:.0f}")
        print(f"{name} system CPU seconds per run: {sum(system[name]) / len(system[name]):.1f}")
    for k in best["default"]:
        print(f"speedup hugetlb vs default ({k}): {best['hugetlb'][k] / best['default'][k]:.2f}")


if __name__ == "__main__":
    main()
