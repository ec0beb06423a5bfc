"""Everything worth measuring in the few minutes a GPU is lent, in one prepared run: one JSON and one log.

    python -m benchmarks.device_check --out docs/device [--budget_s 480]
    python -m benchmarks.device_check --out /tmp/smoke --smoke     # CPU, tiny sizes: checks that it all runs

Parts, in order, each guarded (a failure is recorded and the next part runs) and each skipped, and recorded as
skipped, once the time budget is spent, so the most important figures come first:
  1. `kernels`: every Pallas kernel (causal, the Bitune prefix mask, segment ids, sliding window) compiled forward
     and backward against the XLA reference at S = 1k, 4k, 8k, head dims 64/128/256, bfloat16 and float32, at the
     self-check's tolerance (`kernels.self_check`); a combination that fails is named with its reason.
  2. `attention`: `benchmarks/attention.py` at S = 4096: Pallas vs dense-mask XLA vs cuDNN, forward and backward.
  3. `train_step`: `benchmarks.train_step` (SmolLM2 full and LoRA, and a 1B-class Llama, bf16 on a GPU): tokens/s,
     MFU against the measured matmul peak and against the datasheet peak, the memory XLA planned for the 1B step
     and what the device reports at its peak.
  4. `bitune_step`: `benchmarks.bitune_step`, the fused Bitune LoRA step.
  5. `decode`: the generation engine on SmolLM2, greedy, batch 1 and 32: tokens/s.
The JSON holds every part's figures, its wall time and its errors; the log holds everything printed.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import pathlib
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks, SXM parts
MASKS = {
    "causal": dict(causal=True, window=False, prefix=False, segments=False),
    "bitune_prefix": dict(causal=True, window=False, prefix=True, segments=False),
    "segments": dict(causal=True, window=False, prefix=False, segments=True),
    "sliding_window": dict(causal=True, window=True, prefix=False, segments=False),
}


def headline(text: str) -> dict[str, float]:
    """The `name: value` lines a benchmark prints last."""
    out = {}
    for m in re.finditer(r"^([A-Za-z0-9][\w ./@+-]*): (-?[\d.]+(?:e-?\d+)?)$", text, re.M):
        out[m[1]] = float(m[2])
    return out


def child(args: list[str], log: Callable[[str], None], timeout_s: float) -> dict[str, Any]:
    """Run a benchmark module in a child process (a crash or a hang stays there); its headline figures."""
    cmd = [sys.executable, *args]
    log(f"$ {' '.join(cmd)}")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout_s, 1))
    log(done.stdout + done.stderr[-4000:])
    if done.returncode:
        raise RuntimeError(f"exit code {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return {"figures": headline(done.stdout), "stdout": done.stdout[-6000:]}


def kernels_part(smoke: bool, log: Callable[[str], None], deadline: float) -> dict[str, Any]:
    import jax

    from bitune_jax.kernels import attention as _  # noqa: F401  (the package's modules)
    from bitune_jax.kernels import self_check

    attention_module = sys.modules["bitune_jax.kernels.attention"]
    full = ([1024, 4096, 8192], [64, 128, 256], ["bfloat16", "float32"])
    lengths, dims, dtypes = ([256], [32], ["float32"]) if smoke else full
    results, failing = [], []
    # every dtype, head dim and mask at the shortest length first: if the budget runs out, it cuts lengths
    for length, dtype, dim, (mask, kind) in itertools.product(lengths, dtypes, dims, MASKS.items()):
        entry = {"dtype": dtype, "head_dim": dim, "length": length, "mask": mask}
        if time.monotonic() > deadline:
            results.append({**entry, "status": "skipped (time budget)"})
            continue
        key = self_check.KernelKey(jax.default_backend(), dtype, dim, logit_softcap=None, **kind)
        start = time.monotonic()
        try:
            errors = self_check.compare(key, attention_module._pallas, attention_module._xla_attention, length)
            ok = all(e <= t for e, t in errors.values())
            entry.update(status="equal" if ok else "differs", errors={k: list(v) for k, v in errors.items()})
        except Exception as e:  # noqa: BLE001 - a compile failure is a result here
            entry.update(status="does not compile", error=f"{type(e).__name__}: {str(e)[:300]}")
        entry["seconds"] = round(time.monotonic() - start, 2)
        results.append(entry)
        log(f"kernel {mask} {dtype} d={dim} S={length}: {entry['status']} ({entry['seconds']} s)")
        if entry["status"] not in ("equal",):
            failing.append(entry)
    checked = [r for r in results if not r["status"].startswith("skipped")]
    return {
        "results": results,
        "figures": {"kernels checked": len(checked), "kernels failing": len(failing)},
    }


def decode_part(smoke: bool, log: Callable[[str], None], deadline: float) -> dict[str, Any]:
    import bitune_jax as bj
    from bitune_jax.engine import Engine, PlainDecoder, Request

    lm = bj.load("smollm2-135m-instruct")
    figures = {}
    new_tokens, prompt = (8, 16) if smoke else (128, 128)
    for batch in (1, 2) if smoke else (1, 32):
        if time.monotonic() > deadline:
            break
        engine = Engine(PlainDecoder(lm.cfg), (lm.params, None), slots=batch, eos_ids=())
        requests = [Request([1 + (i % 50)] * prompt, new_tokens) for i in range(batch)]
        engine.run(requests)  # compile
        start = time.perf_counter()
        engine.run(requests)
        seconds = time.perf_counter() - start
        figures[f"decode tokens/s batch {batch}"] = batch * new_tokens / seconds
        log(f"decode batch {batch}: {batch * new_tokens / seconds:.1f} tokens/s")
    return {"figures": figures}


def train_figures(out: dict[str, Any], device_kind: str) -> None:
    """MFU against the datasheet peak, from the measured-peak MFU and the measured peak the run printed."""
    measured = re.search(r"measured matmul peak ([\d.]+) TFLOP/s", out["stdout"])
    peak = next((v for k, v in DATASHEET_TFLOPS.items() if k in device_kind), None)
    if measured and peak:
        for name, value in list(out["figures"].items()):
            if name.endswith("MFU"):
                out["figures"][f"{name} vs datasheet"] = value * float(measured[1]) / peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for device_check.json and device_check.log")
    parser.add_argument("--budget_s", type=float, default=480.0, help="stop starting parts after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU: Pallas in interpret mode)")
    args = parser.parse_args()
    import jax

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = (out_dir / "device_check.log").open("w")

    def log(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    began = time.monotonic()
    deadline = began + args.budget_s
    device = jax.devices()[0]
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device.device_kind,
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "smoke": args.smoke,
        "parts": {},
    }
    log(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, budget {args.budget_s:.0f} s")
    smoke = args.smoke
    remaining = lambda: deadline - time.monotonic()  # noqa: E731
    big = ["--seqs", "4096"]  # the attention benchmark's size on a device
    tiny = {
        "attention": ["--smoke"],
        "train_step": ["--seq", "32", "--repeats", "1"],
        "bitune_step": ["--batch", "2", "--prompt_len", "8", "--answer_len", "8", "--repeats", "1"],
    }
    small = tiny if smoke else {k: [] for k in tiny}
    small["train_step"] += ["--batch", "1", "--no-peer"]  # the PyTorch peer runs on the host CPU: not this check's
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("kernels", lambda: kernels_part(smoke, log, began + 0.45 * args.budget_s)),
        ("attention", lambda: child(["benchmarks/attention.py", *(small["attention"] or big)], log, remaining())),
        (
            "train_step",
            lambda: child(["-m", "benchmarks.train_step", *small["train_step"]], log, remaining()),
        ),
        (
            "bitune_step",
            lambda: child(
                ["-m", "benchmarks.bitune_step", *small["bitune_step"]],
                log,
                remaining(),
            ),
        ),
        ("decode", lambda: decode_part(smoke, log, deadline)),
    ]
    for name, run_part in parts:
        if remaining() <= 0:
            report["parts"][name] = {"status": "skipped (time budget)"}
            log(f"{name}: skipped, the time budget is spent")
            continue
        start = time.monotonic()
        try:
            result = {"status": "ok", **run_part()}
            if name == "train_step":
                train_figures(result, device.device_kind)
        except Exception as e:  # noqa: BLE001 - recorded; the next part still runs
            error = f"{type(e).__name__}: {e}"
            result = {"status": "failed", "error": error, "traceback": traceback.format_exc()[-3000:]}
            log(f"{name}: failed: {type(e).__name__}: {e}")
        result["seconds"] = round(time.monotonic() - start, 1)
        report["parts"][name] = result
        (out_dir / "device_check.json").write_text(json.dumps(report, indent=1))  # after each part: a kill keeps it
    report["seconds"] = round(time.monotonic() - began, 1)
    (out_dir / "device_check.json").write_text(json.dumps(report, indent=1))
    figures = {k: v for part in report["parts"].values() for k, v in part.get("figures", {}).items()}
    for name, value in figures.items():
        log(f"{name}: {value:.4g}")
    log(f"parts ok: {sum(p.get('status') == 'ok' for p in report['parts'].values())}")


if __name__ == "__main__":
    main()
