"""The shipped multi-device configs planned on paper: compile their real train steps ahead of time, allocate nothing.

    python -m benchmarks.scale_plan    # olmo7b_rep h100x8 and v5p-64 at 32,768 tokens, gemma2b_bitune h100x8
    python -m benchmarks.scale_plan --only olmo7b_rep:h100x8 --seq 4096

For each (config, mesh), on simulated host devices: the config's own objective, optimizer, mesh, shardings,
remat, loss chunking and attention (`impl="auto"` resolves to the blockwise XLA path on this CPU host; the GPU/TPU
runs use the Pallas kernels, which hold less) are lowered from `ShapeDtypeStruct`s with `jax.jit(...).lower(...)`
and compiled. Reported per device from XLA's `memory_analysis()`: arguments (state, frozen base, batch), outputs,
temporaries and the total (arguments + outputs + temporaries - donated aliases). Model FLOPs per step come from
the PaLM rule (`step_model_flops`, as the trainer counts them: the head on answer rows, Bitune's two prompt
streams), since XLA's cost analysis counts a scanned layer once. The roofline time is a lower bound: model FLOPs
plus remat recompute over the datasheet bf16 dense peak, or the FSDP traffic (parameters gathered in the forward,
the remat forward and the backward, gradients reduce-scattered) over the per-chip interconnect bandwidth,
whichever is larger.

This is XLA:CPU's buffer assignment for the partitioned program, not the GPU or TPU compiler's: their fusion and
layout choices differ, so read the figures as a plan to check on the first real step, not a measurement of one.
Headline figures last, one per line, as `name: value`.
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules:  # simulated devices must be requested before JAX starts
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=64"

import argparse
import dataclasses
import importlib
import math
import time

import jax
import numpy as np

from bitune_jax.api import DTYPES
from bitune_jax.data.batch import SFTBatch
from bitune_jax.models import presets
from bitune_jax.models.transformer import init_params
from bitune_jax.train.performance import MatmulWeights, step_model_flops
from bitune_jax.train.setup import objective_from_config, optimizer_from_config
from bitune_jax.train.sharding import batch_shardings, make_mesh, row_multiple, tree_shardings
from bitune_jax.train.spec import RunSpec
from bitune_jax.train.step import init_state, jit_train_step
from bitune_jax.train.validate import validate

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float  # dense bf16 peak, datasheet
    memory_gib: float
    link_bytes_per_s: float  # per-chip bandwidth for the FSDP collectives (NVLink / ICI), datasheet


CHIPS = {
    "h100": Chip("H100 SXM", 989e12, 80 * 1e9 / GiB, 450e9),  # NVLink 4: 900 GB/s bidirectional
    "v5p": Chip("TPU v5p", 459e12, 95 * 1e9 / GiB, 600e9),  # ICI 4,800 Gbps per chip
}


@dataclasses.dataclass(frozen=True)
class Case:
    config: str  # experiments/configs/<config>.py
    platform: str | None  # the argument after ':'
    preset: str  # the architecture (weights are never read)
    chip: str
    seq: int
    prompt: int  # prompt tokens per row (Bitune: the bidirectional stream's width + 1)
    budget: int  # updates in the paper's run
    base_dtype: str = "bfloat16"  # the frozen base as stored


CASES = {
    "olmo7b_rep:h100x8": Case("olmo7b_rep", "h100x8", "olmo3-7b", "h100", 32_768, 1_024, 51_200),
    "olmo7b_rep:v5p-64": Case("olmo7b_rep", "v5p-64", "olmo3-7b", "v5p", 32_768, 1_024, 51_200),
    "gemma2b_bitune:h100x8": Case("gemma2b_bitune", "h100x8", "gemma-2b", "h100", 512, 256, 3_000),
}


def load_config(case: Case):
    module = importlib.import_module(f"experiments.configs.{case.config}")
    c = module.get_config(case.platform) if case.platform else module.get_config()
    c.model.name = case.preset
    c.data.source = "synthetic"  # nothing is read; the shapes below stand in for the data
    c.distributed.enabled = False
    c.data.max_len = case.seq
    return c


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def plan(case: Case, seq: int) -> dict[str, float]:
    config = load_config(case)
    m = config.mesh
    devices = m.data * m.fsdp * m.sequence * m.tensor
    validate(config, devices)
    cfg = presets.get(case.preset)
    mesh = make_mesh(**{k: m[k] for k in ("data", "fsdp", "sequence", "tensor")}, devices=jax.devices()[:devices])
    objective = objective_from_config(RunSpec.from_config(config), cfg, mesh)
    schedule, optimizer = optimizer_from_config(config.train, case.budget)
    base = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), DTYPES[case.base_dtype]))
    master = DTYPES[config.model.param_dtype]
    trainable, frozen = jax.eval_shape(lambda p: objective.split(p, jax.random.key(0)), base)
    trainable = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, master), trainable)
    state = jax.eval_shape(lambda tr: init_state(tr, optimizer), trainable)
    state_sh, frozen_sh = tree_shardings(state, mesh), tree_shardings(frozen, mesh)

    rows = config.data.batch_size + (-config.data.batch_size % row_multiple(mesh))
    prompt = min(case.prompt, seq - 1)
    batch = SFTBatch(
        tokens=np.zeros((rows, seq), np.int32),
        prompt_len=np.full((rows,), prompt, np.int32),
        length=np.full((rows,), seq, np.int32),
        example_id=np.zeros((rows,), np.int32),
    )
    batch_sh = batch_shardings(batch, mesh)
    widths = batch.widths(config.data.pad_multiple)  # as the loop rounds them
    widths = widths if objective.kind == "bitune" else (None, widths[1])
    step = jit_train_step(
        objective, optimizer, schedule, state_sh, frozen_sh, batch_sh, prompt_width=widths[0], answer_width=widths[1]
    )
    args = (
        jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_sh),
        jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), frozen, frozen_sh),
        jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), batch, batch_sh),
    )
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes

    chip = CHIPS[case.chip]
    full, real_rows = objective.kind == "full", config.data.batch_size
    real = np.arange(rows) < real_rows  # filler rows (to a multiple of data x fsdp) count nothing
    counted = batch._replace(length=np.where(real, seq, 0), prompt_len=np.where(real, prompt, 0))
    flops = step_model_flops(objective.kind, counted, prompt - 1, MatmulWeights.of(base, cfg), cfg.num_layers, cfg.dim)
    recompute = {"full": 1 / 3, "dots": 1 / 6, "none": 0.0}[config.model.remat]  # extra forward, share of 6N
    compute_s = flops * (1 + recompute) / devices / chip.bf16_flops
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(base))
    sharded = math.prod(mesh.shape[a] for a in ("fsdp", "sequence"))
    gathers = 3 if config.model.remat == "full" else 2  # forward, (remat forward,) backward
    traffic = param_bytes * (gathers + (1 if full else 0)) * (sharded - 1) / sharded
    comm_s = traffic / chip.link_bytes_per_s if sharded > 1 else 0.0
    step_s = max(compute_s, comm_s)
    return {
        "devices": devices,
        "mesh": f"data={m.data} fsdp={m.fsdp} sequence={m.sequence} tensor={m.tensor}",
        "rows": real_rows,
        "seq": seq,
        "compile_s": compile_s,
        "arguments_gib": mem.argument_size_in_bytes / GiB,
        "outputs_gib": mem.output_size_in_bytes / GiB,
        "temporaries_gib": mem.temp_size_in_bytes / GiB,
        "aliased_gib": mem.alias_size_in_bytes / GiB,
        "total_gib": total / GiB,
        "chip_gib": chip.memory_gib,
        "model_tflop_per_step": flops / 1e12,
        "compute_s": compute_s,
        "comm_s": comm_s,
        "step_s": step_s,
        "budget": case.budget,
        "budget_hours": step_s * case.budget / 3600,
        "chip": chip.name,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(CASES), help="plan only these (repeatable)")
    parser.add_argument("--seq", type=int, default=0, help="override every case's sequence length")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.device_count()} simulated {jax.default_backend()} devices")
    results = {}
    for name in args.only or list(CASES):
        case = CASES[name]
        r = plan(case, args.seq or case.seq)
        results[name] = r
        print(
            f"\n{name}: {r['devices']} x {r['chip']} ({r['mesh']}), batch {r['rows']} x {r['seq']} tokens, "
            f"compiled in {r['compile_s']:.0f} s"
        )
        print(
            f"  per device: arguments {r['arguments_gib']:.1f} GiB, outputs {r['outputs_gib']:.1f}, temporaries "
            f"{r['temporaries_gib']:.1f}, donated {r['aliased_gib']:.1f} -> {r['total_gib']:.1f} GiB "
            f"of {r['chip_gib']:.1f}"
        )
        print(
            f"  model TFLOP per step {r['model_tflop_per_step']:.0f}; roofline: compute {r['compute_s']:.2f} s, "
            f"FSDP traffic {r['comm_s']:.2f} s -> step >= {r['step_s']:.2f} s; {r['budget']} updates >= "
            f"{r['budget_hours']:.2g} h",
            flush=True,
        )
    print()
    for name, r in results.items():
        key = name.replace(":", " ")
        print(f"{key} seq {r['seq']} per-device GiB: {r['total_gib']:.1f}")
        print(f"{key} step seconds (roofline): {r['step_s']:.2f}")
        print(f"{key} budget hours (roofline): {r['budget_hours']:.2g}")


if __name__ == "__main__":
    main()
