"""Run two train steps of a tiny model on a given mesh and write the losses, token accuracies and updated
parameters as JSON.

Used by test_sharded_step.py in a subprocess, so XLA_FLAGS (fake CPU devices) and jax.distributed take effect.
    python -m tests.train.sharded_step_worker --out r.json --mesh 2,2,1,2 --kinds full,peft \
        [--rows 8 --seq 16 --attn xla] [--packed] [--process_id 0 --num_processes 2 --port N]
`--mesh` is data,fsdp,sequence,tensor. Rows that do not fill `data x fsdp` are padded as the trainer pads them;
`--packed` packs the same examples into rows of `seq` tokens (`data.packing=first_fit`).
"""

import argparse
import json

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils

from bitune_jax import kernels
from bitune_jax.bitune import BituneConfig
from bitune_jax.data import TokenizedExample
from bitune_jax.data.batch import SFTBatch
from bitune_jax.data.packing import pack
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import batch_shardings, global_batch, make_mesh, row_multiple, tree_shardings
from bitune_jax.train.step import init_state, jit_train_step, make_optimizer, make_schedule


def model_config(seq: int) -> ModelConfig:
    return ModelConfig(
        family="llama",
        vocab_size=64,
        dim=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        max_seq_len=seq,
    )


def batches(step: int, rows: int, seq: int):
    """Rows of different prompt and answer lengths, the longest filling `seq`."""
    rng = np.random.RandomState(step)
    prompt_len = rng.randint(1, max(seq // 3, 2), size=rows).astype(np.int32)
    length = np.minimum(prompt_len + rng.randint(1, seq - seq // 3, size=rows), seq).astype(np.int32)
    length[0] = seq
    return SFTBatch(
        tokens=rng.randint(0, 64, size=(rows, seq)).astype(np.int32),
        prompt_len=prompt_len,
        length=length,
        example_id=np.arange(rows, dtype=np.int32),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh", default="1,1,1,1", help="data,fsdp,sequence,tensor")
    parser.add_argument("--kinds", default="full,peft,bitune")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--attn", default="xla")
    parser.add_argument("--packed", action="store_true")
    parser.add_argument(
        "--sgd", action="store_true", help="SGD: parameters that scale with the gradients (Adam's first"
    )
    # steps move every parameter by about lr whatever its gradient, so a near-zero gradient's rounding shows)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON result file (gloo prints to stdout)")
    args = parser.parse_args()
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
    data, fsdp, sequence, tensor = map(int, args.mesh.split(","))
    mesh = make_mesh(
        data=data, fsdp=fsdp, sequence=sequence, tensor=tensor, devices=jax.devices()[: data * fsdp * sequence * tensor]
    )
    results = {kind: run(kind, mesh, args) for kind in args.kinds.split(",")}
    with open(args.out, "w") as f:
        json.dump(results, f)


def run(kind, mesh, args):
    cfg = model_config(args.seq)
    sp = kernels.SequenceParallel(mesh) if mesh.shape["sequence"] > 1 else None
    objective = Objective(
        kind=kind,
        cfg=cfg,
        peft=PeftConfig(rank=4) if kind == "peft" else None,
        bitune=BituneConfig(peft=PeftConfig(rank=4)) if kind == "bitune" else None,
        compute=Compute(attn_impl=args.attn, sequence_parallel=sp),
    )
    params = init_params(cfg, jax.random.key(0), scale=0.1)
    trainable, frozen = objective.split(params, jax.random.key(1))
    schedule = make_schedule("cosine", 1e-2, 4, 0.25)
    optimizer = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0)
    if args.sgd:
        optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(schedule))
    state = init_state(trainable, optimizer)
    state_sh, frozen_sh = tree_shardings(state, mesh), tree_shardings(frozen, mesh)
    state, frozen = jax.device_put(state, state_sh), jax.device_put(frozen, frozen_sh)
    step = None
    losses, accuracies = [], []
    for i in range(2):
        full = batches(i, args.rows, args.seq)
        if args.packed:
            examples = [
                TokenizedExample(prompt_ids=t[:p].tolist(), answer_ids=t[p:n].tolist(), source=f"row {r}")
                for r, (t, p, n) in enumerate(zip(full.tokens, full.prompt_len, full.length))
            ]
            full = pack(
                examples, full.example_id, args.seq, 0, row_multiple=row_multiple(mesh), prompt_rows=kind == "bitune"
            )
        full = full.pad_rows(row_multiple(mesh))
        step = step or jit_train_step(objective, optimizer, schedule, state_sh, frozen_sh, batch_shardings(full, mesh))
        state, metrics = step(state, frozen, global_batch(full, mesh))
        losses.append(float(metrics["loss"]))
        accuracies.append(float(metrics["token_accuracy"]))
    leaves = [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in jax.tree.leaves(state.trainable)]
    sharded = sum(1 for x in jax.tree.leaves(state) if not x.sharding.is_fully_replicated)
    return {
        "losses": losses,
        "accuracies": accuracies,
        "params": [x.tolist() for x in leaves],
        "sharded_leaves": sharded,
        "devices": len(jax.devices()),
        "processes": jax.process_count(),
    }


if __name__ == "__main__":
    main()
