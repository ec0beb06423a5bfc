"""What a run is built from, before its first step: the process group, the training pool and set, the plan (steps
and updates), the objective, the optimizer and the initial state. Functions of the typed spec; `build_run` puts them
together in the order a run needs (everything cheap and checkable before the model loads), and the loop (`loop.py`)
starts from what it returns.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

import bitune_jax as bj
from bitune_jax import kernels
from bitune_jax.api import LM, read_config
from bitune_jax.data import EpochBatches, read_records, split_pool, tokenize_records
from bitune_jax.data.hf_datasets import read_hf_records
from bitune_jax.models.compute import DTYPES, Compute
from bitune_jax.tasks import registry
from bitune_jax.train import checkpointing
from bitune_jax.train.evaluation import RunEvals
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import make_mesh, row_multiple, tree_shardings
from bitune_jax.train.spec import DataSpec, DistributedSpec, RunSpec, TrainSpec
from bitune_jax.train.step import TrainState, annealed, init_state, make_optimizer, make_schedule
from bitune_jax.train.validate import ConfigError


def maybe_init_distributed(dist: ConfigDict | DistributedSpec) -> None:
    if not dist.enabled:
        return
    if dist.coordinator:
        jax.distributed.initialize(dist.coordinator, dist.num_processes, dist.process_id)
    else:
        jax.distributed.initialize()  # cluster auto-detection (TPU pods, SLURM, ...)


def check_architecture(directory: pathlib.Path, step: int, model_name: str) -> None:
    """Before any weight loads: the model a resume is allowed to switch to has the checkpoint's architecture."""
    saved = (checkpointing.saved_fingerprint(directory, step) or {}).get("config_hash")
    if saved is not None and saved != checkpointing.config_hash(read_config(model_name)):
        raise checkpointing.CheckpointMismatchError(
            f"checkpoint at {directory} (step {step}) was trained on another architecture than {model_name} "
            "(its config differs); resume.allow_changes=model.name lets a run go on with other weights of the same "
            "architecture only"
        )


def read_training_pool(data: DataSpec) -> tuple[list, str]:
    """The pool the training set is drawn from and a description of it, read before the model loads, so a bad row
    or a `num_samples` larger than the pool fails in seconds. `data` has passed `validate`."""
    if data.source == "jsonl":
        records, source = read_records(data.train_path), str(data.train_path)
    elif data.source == "hf":
        hf = data.hf
        records = read_hf_records(
            hf.path,
            split=hf.split,
            messages=hf.messages,
            prompt=hf.prompt,
            response=hf.response,
            where_column=hf.where_column,
            where_value=hf.where_value,
        )
        where = f", {hf.where_column}={hf.where_value!r}" if hf.where_column else ""
        source = f"{hf.path} (split {hf.split}{where})"
    else:
        records = registry.split(data.synthetic)[0]
        source = registry.describe(data.synthetic)
    if data.val_size >= len(records):
        raise ConfigError(f"config.data.val_size={data.val_size}, but {source} holds {len(records)} rows")
    if data.num_samples > len(records) - data.val_size:
        raise ConfigError(
            f"config.data.num_samples={data.num_samples}, but {source} holds {len(records)} rows"
            + (f", {data.val_size} of them for validation" if data.val_size else "")
            + "; lower it or set 0 for all"
        )
    return records, source


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    examples: list  # TokenizedExample, the training set after the truncation policy
    rows: np.ndarray  # [len(examples)] each example's row in the training set as drawn (before any was dropped)
    report: Any  # TruncationReport
    val_examples: list  # the validation rows (`data.val_size`, the same for every training size; may be empty)


def training_set(records: list, data: DataSpec, tok, max_len: int, source: str) -> TrainingSet:
    """The tokenized training set: a nested prefix of the pool after the validation rows."""
    if data.chat_template:
        tok.chat_template = pathlib.Path(data.chat_template).read_text()
    val_ids, ids = split_pool(
        len(records),
        data.val_size,
        data.num_samples or len(records) - data.val_size,
        data.pool_seed,
        shuffle=data.pool_order == "shuffle",
    )
    encode = functools.partial(
        tokenize_records,
        tok=tok,
        max_len=max_len,
        truncation=data.truncation,
        template=data.template,
        control_tokens=data.control_tokens,
    )
    examples, report = encode([records[i] for i in ids])
    if not examples:
        raise ValueError(f"no training example left from {source} after truncation: {report.summary()}")
    row_of = {records[i].where: row for row, i in enumerate(ids)}
    rows = np.asarray([row_of[e.source] for e in examples], np.int64)
    val_examples = encode([records[i] for i in val_ids])[0] if len(val_ids) else []
    return TrainingSet(examples, rows, report, val_examples)


def plan(t: TrainSpec, steps_per_epoch: int) -> tuple[int, int]:
    """`(steps, optimizer updates)` of a run: `t.epochs` epochs of `steps_per_epoch` batches, cut at the update
    budget `t.max_updates` when it is set (and reached first), as both papers' loops end; `t.accumulate` steps make
    one update."""
    steps = t.epochs * steps_per_epoch
    if t.max_updates:
        steps = min(steps, t.max_updates * t.accumulate)
    return steps, -(-steps // t.accumulate)


def compute_from_spec(spec: RunSpec, mesh: jax.sharding.Mesh | None = None) -> Compute:
    """How the run's forwards run: dtype, attention, remat, loss chunking, and the sequence split of the mesh."""
    sp = kernels.SequenceParallel(mesh) if mesh is not None and mesh.shape["sequence"] > 1 else None
    return Compute(
        dtype=DTYPES[spec.model.dtype],
        attn_impl=spec.model.attn_impl,
        remat=spec.model.remat,
        loss_chunk=spec.train.loss_chunk,
        sequence_parallel=sp,
    )


def objective_from_config(spec: RunSpec, cfg, mesh: jax.sharding.Mesh | None = None) -> Objective:
    """The run's objective with the compute its spec and mesh give."""
    return Objective.from_spec(spec, cfg, compute_from_spec(spec, mesh))


def optimizer_from_config(
    t: TrainSpec, total_updates: int, anneal: dict[str, int] | None = None, lr_scale: float = 1.0
):
    """`(schedule, optimizer)` of the train spec for a budget of `total_updates` optimizer updates; `anneal`
    (`{"start", "length"}`, set at saturation) makes the rate fall to 0 from update `start`; `lr_scale` (after
    divergence rollbacks) multiplies the whole schedule."""
    schedule = make_schedule(t.schedule, t.lr * lr_scale, total_updates, t.warmup_frac)
    if anneal is not None:
        schedule = annealed(schedule, anneal["start"], anneal["length"])
    return schedule, make_optimizer(
        schedule,
        b1=t.b1,
        b2=t.b2,
        eps=t.eps,
        weight_decay=t.weight_decay,
        clip=t.clip,
        accumulate=t.accumulate,
        moments_dtype=DTYPES[t.moments_dtype],
    )


@dataclasses.dataclass
class RunParts:
    """Everything a run starts from: its data in batches, the plan, the objective, the optimizer, the initial state
    on the mesh and the evaluations, as `build_run` made them."""

    source: str  # the training pool, described
    model_cfg: Any  # the model's config (`ModelConfig`)
    shell: LM  # the loaded model without its weights: ids, dtype and tokenizer for the evals
    mesh: jax.sharding.Mesh
    training: TrainingSet
    batches: EpochBatches
    total_steps: int  # the plan: batches to train on ...
    total_updates: int  # ... and the optimizer updates they make (`train.accumulate` steps each)
    objective: Objective
    schedule: Any  # update -> learning rate
    optimizer: Any  # optax.GradientTransformation
    state: TrainState  # trainable weights (in `model.param_dtype`) and optimizer state, sharded
    frozen: Any  # the weights the objective does not train, sharded
    state_shardings: Any
    frozen_shardings: Any
    evals: RunEvals


def build_run(spec: RunSpec) -> RunParts:
    """Read the pool and the eval rows (seconds, and bad rows fail here), then load the model onto the mesh,
    tokenize, batch, plan, and build the objective, the optimizer and the initial state."""
    pool, source = read_training_pool(spec.data)
    mmlu = RunEvals.read_mmlu(spec)  # rows read and checked before the model loads
    mesh = make_mesh(**dataclasses.asdict(spec.mesh))
    # weights read shard by shard straight into their shardings on the mesh
    lm = bj.load(spec.model.name, dtype=spec.model.dtype, attn_impl=spec.model.attn_impl, mesh=mesh)
    cfg, tok = lm.cfg, lm.tokenizer
    if tok is None:
        raise ValueError(f"model {spec.model.name!r} has no tokenizer; training needs one to encode the data")
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"tokenizer of {spec.model.name!r} has {tok.vocab_size} tokens but the model's embedding "
            f"has {cfg.vocab_size} rows: they do not belong together"
        )
    max_len = min(spec.data.max_len, cfg.max_seq_len)
    chosen = training_set(pool, spec.data, tok, max_len, source)
    batches = EpochBatches(
        chosen.examples,
        spec.data.batch_size,
        seed=spec.seed,
        pad_id=lm.pad_id,
        multiple=spec.data.pad_multiple,
        bucket_chunks=spec.data.bucket_chunks,
        max_width=max_len,
        order=spec.data.order,
        packing=spec.data.packing,
        row_multiple=row_multiple(mesh),
        prompt_rows=spec.objective == "bitune",
    )
    total_steps, total_updates = plan(spec.train, batches.batches_per_epoch)
    objective = objective_from_config(spec, cfg, mesh)
    schedule, optimizer = optimizer_from_config(spec.train, total_updates)
    trainable, frozen = objective.split(lm.params, jax.random.key(spec.seed))
    master = DTYPES[spec.model.param_dtype]
    trainable = jax.tree.map(lambda x: x.astype(master), trainable)
    abstract = jax.eval_shape(lambda tr: init_state(tr, optimizer), trainable)
    state_sh, frozen_sh = tree_shardings(abstract, mesh), tree_shardings(frozen, mesh)
    state = jax.jit(lambda tr: init_state(tr, optimizer), out_shardings=state_sh)(trainable)
    shell = dataclasses.replace(lm, params={})
    evals = RunEvals.create(
        spec, shell, mmlu, chosen.val_examples, objective, mesh, max_len, state_sh.trainable, frozen_sh
    )
    return RunParts(
        source=source,
        model_cfg=cfg,
        shell=shell,
        mesh=mesh,
        training=chosen,
        batches=batches,
        total_steps=total_steps,
        total_updates=total_updates,
        objective=objective,
        schedule=schedule,
        optimizer=optimizer,
        state=state,
        frozen=jax.device_put(frozen, frozen_sh),
        state_shardings=state_sh,
        frozen_shardings=frozen_sh,
        evals=evals,
    )
