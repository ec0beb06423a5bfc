"""Per-epoch training statistics, accumulated on the device inside the jitted step.

The loop then reads the device only on log steps, checkpoint saves and epoch ends, and dispatches the next step
while the current one runs. A non-finite step never changes the state (`train_step`). With `halt=True` (the
default policy, `train.on_nonfinite="stop"`) the statistics record the first such step and every later update
becomes a no-op (`train_step(halted=)`), so a run that diverged between two reads is stopped at its next read with
the weights of the last finite step, exactly as if it had been checked every step. With `halt=False`
(`"skip_batch"`) such steps are counted and training goes on.

The largest finite step loss and gradient norm since the last checkpoint save ride along (`window_*`; they span
epochs and are reset by `new_window`): the save judges from them whether its checkpoint is known good
(`divergence`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class EpochStats(NamedTuple):
    correct: jax.Array  # [] int32 answer tokens predicted right (argmax)
    tokens: jax.Array  # [] int32 answer tokens
    loss: jax.Array  # [] float32 sum of step losses
    steps: jax.Array  # [] int32 steps taken this epoch
    sample_accuracy: jax.Array  # [] float32 sum over real rows of each row's own token accuracy
    samples: jax.Array  # [] int32 real rows seen
    memorized: jax.Array  # [num_examples] int8: -1 not seen this epoch, 1 every answer token right, 0 not
    bad_batch: jax.Array  # [] int32 batch number (epoch * batches_per_epoch + index) of the first non-finite step
    bad_loss: jax.Array  # [] float32 its loss
    bad_grad_norm: jax.Array  # [] float32 its gradient norm
    skipped: jax.Array  # [] int32 non-finite steps skipped (halt=False)
    window_max_loss: jax.Array  # [] float32 largest finite step loss since the last save
    window_max_grad_norm: jax.Array  # [] float32 largest finite gradient norm since the last save

    @property
    def halted(self) -> jax.Array:
        return self.bad_batch >= 0


def empty(num_examples: int) -> EpochStats:
    zero_i, zero_f = np.zeros((), np.int32), np.zeros((), np.float32)
    return EpochStats(
        correct=zero_i,
        tokens=zero_i,
        loss=zero_f,
        steps=zero_i,
        sample_accuracy=zero_f,
        samples=zero_i,
        memorized=np.full((num_examples,), -1, np.int8),
        bad_batch=np.full((), -1, np.int32),
        bad_loss=zero_f,
        bad_grad_norm=zero_f,
        skipped=zero_i,
        window_max_loss=zero_f,
        window_max_grad_norm=zero_f,
    )


def next_epoch(stats: EpochStats) -> EpochStats:
    """Empty epoch statistics that keep the save window's maxima (a window may span an epoch end)."""
    return empty(stats.memorized.shape[0])._replace(
        window_max_loss=np.asarray(stats.window_max_loss), window_max_grad_norm=np.asarray(stats.window_max_grad_norm)
    )


def new_window(stats: EpochStats) -> EpochStats:
    """`stats` with the save window's maxima reset (at a checkpoint save)."""
    zero = np.zeros((), np.float32)
    return stats._replace(window_max_loss=zero, window_max_grad_norm=zero)


def accumulate(
    stats: EpochStats, metrics: dict[str, jax.Array], example_id: jax.Array, batch_number: jax.Array, halt: bool = True
) -> EpochStats:
    """Fold one step in. A non-finite step adds nothing; with `halt` it is recorded as the first bad one and every
    step after it adds nothing either, without it is counted in `skipped`."""
    finite = metrics["finite"] & ~stats.halted
    add = lambda total, x: total + jnp.where(finite, x, 0).astype(total.dtype)  # noqa: E731
    n = stats.memorized.shape[0]
    real = example_id >= 0  # filler rows carry example_id -1
    ids = jnp.where(real & finite, example_id, n)  # filler rows and skipped steps: dropped
    fully_right = (metrics["per_example_accuracy"] >= 1.0).astype(jnp.int8)
    memorized = jnp.asarray(stats.memorized).at[ids].set(fully_right, mode="drop")
    newly_bad = ~metrics["finite"] & ~stats.halted & halt
    pick = lambda old, new: jnp.where(newly_bad, new, old).astype(old.dtype)  # noqa: E731
    peak = lambda old, x: jnp.maximum(old, jnp.where(finite, x, 0.0)).astype(old.dtype)  # noqa: E731
    return EpochStats(
        correct=add(stats.correct, metrics["correct"]),
        tokens=add(stats.tokens, metrics["tokens"]),
        loss=add(stats.loss, metrics["loss"]),
        steps=add(stats.steps, 1),
        memorized=memorized,
        sample_accuracy=add(stats.sample_accuracy, jnp.where(real, metrics["per_example_accuracy"], 0.0).sum()),
        samples=add(stats.samples, real.sum()),
        bad_batch=pick(stats.bad_batch, batch_number),
        bad_loss=pick(stats.bad_loss, metrics["loss"]),
        bad_grad_norm=pick(stats.bad_grad_norm, metrics["grad_norm"]),
        skipped=stats.skipped + (~metrics["finite"] & ~stats.halted).astype(jnp.int32),
        window_max_loss=peak(stats.window_max_loss, metrics["loss"]),
        window_max_grad_norm=peak(stats.window_max_grad_norm, metrics["grad_norm"]),
    )


def summary(stats: EpochStats) -> dict[str, float]:
    """Epoch token accuracy (over answer tokens; `sample_token_accuracy`: the mean of each sample's own, so a long
    trace weighs as much as a short one), mean step loss, the fraction of seen examples memorized, and the
    non-finite batches skipped."""
    seen = np.asarray(stats.memorized) >= 0
    return {
        "skipped_batches": int(stats.skipped),
        "token_accuracy": int(stats.correct) / max(int(stats.tokens), 1),
        "sample_token_accuracy": float(stats.sample_accuracy) / max(int(stats.samples), 1),
        "loss": float(stats.loss) / max(int(stats.steps), 1),
        "memorized_fraction": float(np.mean(np.asarray(stats.memorized)[seen] == 1)) if seen.any() else 0.0,
    }


def to_json(stats: EpochStats) -> dict[str, Any]:
    """Host values for a checkpoint's metadata (exact: integers and float32 values round-trip through JSON)."""
    return {k: np.asarray(v).tolist() for k, v in stats._asdict().items()}


def from_json(saved: dict[str, Any]) -> EpochStats:
    missing = [k for k in EpochStats._fields if k not in saved]
    if missing:
        raise ValueError(
            f"the checkpoint's epoch statistics lack {missing}: it was written by an older bitune_jax; "
            "finish that run with the version that started it, or start a new workdir"
        )
    dtypes = {k: np.asarray(v).dtype for k, v in empty(0)._asdict().items()}
    return EpochStats(**{k: np.asarray(saved[k], dtypes[k]) for k in EpochStats._fields})
