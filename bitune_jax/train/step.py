"""The optimizer and the pure, jitted train step."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bitune_jax.data.batch import SFTBatch
from bitune_jax.train import epoch_stats
from bitune_jax.train.epoch_stats import EpochStats
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import batch_shardings


class TrainState(NamedTuple):
    step: jax.Array  # [] int32, optimizer updates applied
    trainable: Any  # float32 master weights (or the configured param dtype)
    opt_state: Any


def warmup_updates(warmup_frac: float, total_updates: int) -> int:
    """`floor(warmup_frac * total_updates)`, the authors' `total_steps // 10` at 0.1 (both papers' code; the
    decimal rounding keeps 0.29 * 100 at 29 where the float product is 28.999...)."""
    return math.floor(round(warmup_frac * total_updates, 9))


def make_schedule(kind: str, peak_lr: float, total_updates: int, warmup_frac: float) -> optax.Schedule:
    """Linear warmup over `warmup_updates` of the budget, then cosine or linear decay to 0, or constant; as
    transformers' `get_{cosine,linear,constant}_schedule_with_warmup`, which the papers' code steps per update."""
    warmup = warmup_updates(warmup_frac, total_updates)
    decay = max(total_updates - warmup, 1)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak_lr, max(warmup, 0), warmup + decay, end_value=0.0)
    if kind == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak_lr, max(warmup, 1)), optax.linear_schedule(peak_lr, 0.0, decay)], [warmup]
        )
    if kind == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak_lr, max(warmup, 1)), optax.constant_schedule(peak_lr)], [warmup]
        )
    raise ValueError(f"unknown schedule {kind!r}; choose cosine, linear or constant")


def annealed(schedule: optax.Schedule, start: int, length: int) -> optax.Schedule:
    """`schedule` up to update `start`, then a linear fall from `schedule(start)` to 0 at `start + length`."""
    peak = schedule(start)
    return lambda update: jnp.where(
        update < start, schedule(update), peak * jnp.clip(1.0 - (update - start) / length, 0.0, 1.0)
    )


def per_step(schedule: optax.Schedule, accumulate: int) -> optax.Schedule:
    """The learning rate in effect at each step (batch) when `accumulate` steps make one optimizer update: the
    schedule runs on updates, which is the count `optax.MultiSteps` gives the inner optimizer."""
    return schedule if accumulate == 1 else lambda step: schedule(step // accumulate)


def make_optimizer(
    schedule: optax.Schedule,
    *,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    clip: float | None,
    accumulate: int = 1,
    moments_dtype: Any = jnp.float32,
) -> optax.GradientTransformation:
    """AdamW (with global-norm clipping, and `accumulate` steps per update) whose moments, accumulated gradients
    and update math are in `moments_dtype` whatever the parameters' dtype: with bf16 parameters, bf16 moments
    would lose `0.999 * nu` below bf16 resolution (the authors' 8-bit AdamW also dequantizes to float32 for the
    update). `optax.apply_updates` casts each update back to its parameter's dtype."""
    chain = [optax.clip_by_global_norm(clip)] if clip else []
    chain.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    tx = optax.chain(*chain)
    tx = optax.MultiSteps(tx, every_k_schedule=accumulate) if accumulate > 1 else tx
    return _in_dtype(tx, jnp.dtype(moments_dtype))


def _in_dtype(tx: optax.GradientTransformation, dtype) -> optax.GradientTransformation:
    cast = lambda tree: jax.tree.map(lambda x: x.astype(dtype), tree)  # noqa: E731

    def init(params):
        return tx.init(cast(params))

    def update(grads, state, params=None):
        return tx.update(cast(grads), state, None if params is None else cast(params))

    return optax.GradientTransformation(init, update)


def init_state(trainable, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, opt_state=optimizer.init(trainable))


def train_step(
    state: TrainState,
    frozen,
    batch: SFTBatch,
    *,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    prompt_width: int | None = None,
    answer_width: int | None = None,
    halted: jax.Array | None = None,
):
    """One step (an optimizer update, or one accumulated batch of one). A non-finite loss or gradient, or a true
    `halted` (the loop's: an earlier step went non-finite), leaves the state unchanged. `schedule` maps the step to
    the learning rate it runs at, for the log (see `per_step`)."""
    dropout_key = jax.random.fold_in(jax.random.key(objective.seed), state.step)
    loss_fn = functools.partial(
        objective.loss, prompt_width=prompt_width, answer_width=answer_width, dropout_key=dropout_key
    )
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable, frozen, batch)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(state: TrainState) -> TrainState:
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        return TrainState(step=state.step + 1, trainable=trainable, opt_state=opt_state)

    # A branch, not a select over the whole state: a select reads the old and the new state and writes a third copy
    # (a fifth of a full fine-tuning step on a CPU); the skipped branch hands the state back untouched.
    apply = finite if halted is None else finite & ~halted
    new = jax.lax.cond(apply, update, lambda s: s, state)
    metrics = {**metrics, "grad_norm": grad_norm, "learning_rate": schedule(state.step), "finite": finite}
    return new, metrics


def loop_step(
    state: TrainState,
    frozen,
    batch: SFTBatch,
    stats: EpochStats,
    batch_number: jax.Array,
    *,
    halt: bool = True,
    **step_kwargs,
):
    """`train_step` that folds itself into the on-device epoch statistics and (with `halt`) is a no-op once a step
    has gone non-finite, so the loop may read the device only now and then (see `epoch_stats`)."""
    new, metrics = train_step(state, frozen, batch, halted=stats.halted if halt else None, **step_kwargs)
    if not halt:  # a skipped batch is still consumed: the step (data position, schedule) moves on, the weights do not
        new = new._replace(step=state.step + 1)
    return new, epoch_stats.accumulate(stats, metrics, batch.example_id, batch_number, halt), metrics


def jit_train_step(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings,
    frozen_shardings,
    batch_shardings,
    *,
    prompt_width: int | None = None,
    answer_width: int | None = None,
    donate: bool = True,
    with_stats: bool = False,
    halt_on_nonfinite: bool = True,
):
    """`train_step` (or with `with_stats`, `loop_step`) compiled with explicit in/out shardings: the state keeps
    its layout and the old one is donated; metrics and statistics are replicated, readable by every process."""
    kwargs = dict(
        objective=objective,
        optimizer=optimizer,
        schedule=schedule,
        prompt_width=prompt_width,
        answer_width=answer_width,
    )
    mesh = jax.tree.leaves(batch_shardings)[0].mesh  # one sharding for the whole batch, or one per array
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    if with_stats:
        return jax.jit(
            functools.partial(loop_step, halt=halt_on_nonfinite, **kwargs),
            in_shardings=(state_shardings, frozen_shardings, batch_shardings, replicated, replicated),
            out_shardings=(state_shardings, replicated, replicated),
            donate_argnums=(0, 3) if donate else (),
        )
    return jax.jit(
        functools.partial(train_step, **kwargs),
        in_shardings=(state_shardings, frozen_shardings, batch_shardings),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,) if donate else (),
    )


class StepCache:
    """The loop's compiled steps, one per batch layout and (prompt, answer) width: a new shape compiles once, and
    `clear` drops them all when the schedule they close over changes (an anneal, a rollback)."""

    def __init__(self, objective: Objective, state_shardings, frozen_shardings, mesh, *, halt_on_nonfinite: bool):
        self.objective, self.mesh, self.halt = objective, mesh, halt_on_nonfinite
        self.state_shardings, self.frozen_shardings = state_shardings, frozen_shardings
        self.optimizer = self.schedule = None
        self._steps: dict[tuple, Any] = {}

    def replan(self, optimizer: optax.GradientTransformation, schedule: optax.Schedule) -> None:
        """Steps from now on use `optimizer` and `schedule` (a per-step schedule); compiled ones are dropped."""
        self.optimizer, self.schedule = optimizer, schedule
        self._steps.clear()

    def get(self, batch, widths: tuple[int, ...]):
        """The `loop_step` for `batch`'s layout (SFTBatch or PackedBatch) at `widths` (`batch.widths(multiple)`)."""
        key = (type(batch).__name__, *widths)
        if key not in self._steps:
            self._steps[key] = jit_train_step(
                self.objective,
                self.optimizer,
                self.schedule,
                self.state_shardings,
                self.frozen_shardings,
                batch_shardings(batch, self.mesh),
                prompt_width=widths[0],
                answer_width=widths[1],
                with_stats=True,
                halt_on_nonfinite=self.halt,
            )
        return self._steps[key]
