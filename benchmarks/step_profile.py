"""Where a train step's time goes on this machine: a `jax.profiler` trace of SmolLM2-135M-Instruct's full, LoRA and
Bitune steps (float32), and the time split by XLA operation kind.

    python -m benchmarks.step_profile [--kinds full peft bitune] [--batch 1] [--seq 256] [--trace-dir DIR]

Each step compiles, runs once untraced, then twice under the profiler. The trace's perfetto JSON is read back and
each XLA operation's wall time is summed by its kind (matmuls: `dot`/`convolution` and the fusions that hold one;
other fusions; copies and transposes; the rest), per step. On the CPU the thunks of one step can run in parallel on
the cores, so the kinds can add up to more than the step's wall time. The traces stay in `--trace-dir` for
Perfetto or TensorBoard. Prints the headline split last.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import bitune_jax as bj
from bitune_jax.bitune import BituneConfig
from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.compute import Compute
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import BATCH, make_mesh, tree_shardings
from bitune_jax.train.step import init_state, jit_train_step, make_optimizer, make_schedule

TRACED_STEPS = 2


def hlo_ops(hlo: str) -> dict[str, tuple[set[str], str]]:
    """Each instruction of the compiled module's text -> (every opcode it runs, its called computations followed
    down; the JAX op name in its metadata)."""
    computations: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            current = computations.setdefault(header[1], [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            current.append(line)
    instructions: dict[str, tuple[str, list[str], str]] = {}
    for lines in computations.values():
        for line in lines:
            m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\s([a-z][\w\-]*)\(", line)
            if m:
                calls = re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", line)
                op_name = re.search(r'op_name="([^"]*)"', line)
                instructions[m[1]] = (m[2], calls, op_name[1] if op_name else "")

    def opcodes(computation: str, seen: set[str]) -> set[str]:
        if computation in seen:
            return set()
        seen.add(computation)
        out = set()
        for line in computations.get(computation, []):
            m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
            if m and m[1] in instructions:
                opcode, calls, _ = instructions[m[1]]
                out.add(opcode)
                for c in calls:
                    out |= opcodes(c, seen)
        return out

    return {
        name: ({opcode, *(o for c in calls for o in opcodes(c, set()))}, op_name)
        for name, (opcode, calls, op_name) in instructions.items()
    }


def kind_of(opcodes: set[str]) -> str:
    """What an operation mostly is, by the opcodes it runs."""
    if opcodes & {"dot", "convolution"}:
        return "matmul (+ fused)"
    if opcodes & {"scatter", "gather", "dynamic-slice", "dynamic-update-slice"}:
        return "gather/scatter"
    if opcodes & {"reduce", "reduce-window", "sort"}:
        return "reduction (+ fused)"
    if opcodes <= {
        "copy",
        "transpose",
        "bitcast",
        "broadcast",
        "concatenate",
        "slice",
        "reshape",
        "parameter",
        "fusion",
        "constant",
        "pad",
    }:
        return "copy/layout"
    return "elementwise"


def op_times(trace_dir: pathlib.Path, step_names: set[str]) -> dict[str, float]:
    """Seconds per XLA operation name over every traced event, skipping the step's own (whole-program) events."""
    files = sorted(trace_dir.rglob("*.trace.json.gz")) + sorted(trace_dir.rglob("perfetto_trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"no trace under {trace_dir}")
    with gzip.open(files[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = e.get("name", "")
        if name in step_names or name.startswith(("jit_", "Thunk", "PjRt", "$")):
            continue
        totals[name] += e["dur"] * 1e-6
    return totals


def profile(lm: bj.LM, kind: str, batch: int, seq: int, trace_dir: pathlib.Path) -> dict[str, float]:
    compute = Compute(dtype=jnp.float32)
    peft = PeftConfig(rank=8)
    objective = Objective(
        kind=kind,
        cfg=lm.cfg,
        peft=peft if kind == "peft" else None,
        bitune=BituneConfig(peft=peft) if kind == "bitune" else None,
        compute=compute,
    )
    trainable, frozen = objective.split(lm.params, jax.random.key(0))
    trainable = jax.tree.map(jnp.copy, trainable)
    schedule = make_schedule("constant", 1e-5, 100, 0.0)
    optimizer = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0)
    mesh = make_mesh(devices=jax.devices()[:1])
    state = init_state(trainable, optimizer)
    step = jit_train_step(
        objective,
        optimizer,
        schedule,
        tree_shardings(state, mesh),
        tree_shardings(frozen, mesh),
        jax.sharding.NamedSharding(mesh, BATCH),
    )
    rng = np.random.RandomState(0)
    data = SFTBatch(
        tokens=jnp.asarray(rng.randint(0, lm.cfg.vocab_size, (batch, seq)), jnp.int32),
        prompt_len=jnp.full((batch,), seq // 8, jnp.int32),
        length=jnp.full((batch,), seq, jnp.int32),
    )
    compiled = step.lower(state, frozen, data).compile()
    state, metrics = compiled(state, frozen, data)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        for _ in range(TRACED_STEPS):
            state, metrics = compiled(state, frozen, data)
            jax.block_until_ready(metrics)
    wall = (time.perf_counter() - start) / TRACED_STEPS
    ops = {k: v / TRACED_STEPS for k, v in op_times(trace_dir, set()).items()}
    hlo = hlo_ops(compiled.as_text())
    by_kind: dict[str, float] = collections.defaultdict(float)
    for name, seconds in ops.items():
        by_kind[kind_of(hlo[name][0]) if name in hlo else "runtime (not an XLA op)"] += seconds
    print(f"\n{kind} batch {batch} x {seq}: {wall * 1e3:.0f} ms per traced step (profiler on)", flush=True)
    for name, seconds in sorted(ops.items(), key=lambda kv: -kv[1])[:30]:
        opcodes, op_name = hlo.get(name, (set(), ""))
        what = op_name[-80:] or ",".join(sorted(opcodes))[:80]
        print(f"  {seconds * 1e3:8.1f} ms  {name:28s} {kind_of(opcodes) if opcodes else '':20s} {what}")
    by_source: dict[str, float] = collections.defaultdict(float)
    for name, seconds in ops.items():
        op_name = hlo.get(name, (set(), "(runtime)"))[1] or "(no op name)"
        by_source[re.sub(r"/while/body/closed_call", "/layers", op_name.removeprefix("jit(train_step)/"))] += seconds
    print("  by JAX operation:")
    for source, seconds in sorted(by_source.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {seconds * 1e3:8.1f} ms  {source[-110:]}")
    for k, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  [{k}] {seconds * 1e3:.0f} ms ({seconds / wall:.0%} of the step)")
    return {"wall": wall, **by_kind}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", nargs="+", default=["full", "peft", "bitune"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--trace-dir", default=None)
    args = parser.parse_args()
    root = pathlib.Path(args.trace_dir or tempfile.mkdtemp(prefix="step_profile_"))
    lm = bj.load("smollm2-135m-instruct")
    results = {kind: profile(lm, kind, args.batch, args.seq, root / kind) for kind in args.kinds}
    print(f"\ntraces in {root}")
    for kind, split in results.items():
        print(f"{kind} step ms: {split['wall'] * 1e3:.0f}")
        for k, seconds in split.items():
            if k != "wall":
                print(f"{kind} {k} share: {seconds / split['wall']:.2f}")


if __name__ == "__main__":
    main()
