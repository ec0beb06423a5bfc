"""Divergence recovery: which checkpoint is known good, and what a rollback changes.

A loss spike usually precedes a NaN by a few steps, so the newest checkpoint may already hold weights on their way
out. Every save therefore records its window (the steps since the previous save): the largest step loss and
gradient norm in it. A window is healthy when both stay within `spike_factor` of the median of the recent windows'
(a spike is judged against what training looked like just before it), and the newest checkpoint at the end of a
healthy window is the run's *last known good* one: the checkpointer keeps it whatever `checkpoint.keep` says.

Under `train.on_nonfinite="rollback"` a non-finite step restores that checkpoint, skips the offending batch when
the replay reaches it again, and scales the learning rate by `train.rollback_lr_factor`; after
`train.rollback_limit` rollbacks the run stops.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

RECENT_WINDOWS = 8  # windows the spike reference is the median of


@dataclasses.dataclass(frozen=True)
class Window:
    """The steps between two checkpoint saves, ending at checkpoint `step`."""

    step: int
    max_loss: float
    max_grad_norm: float
    healthy: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Window:
        return cls(**saved)


def judge(step: int, max_loss: float, max_grad_norm: float, earlier: Sequence[Window], spike_factor: float) -> Window:
    """The window ending at `step`: healthy when finite and within `spike_factor` of the recent windows' medians
    (the first window has nothing to compare with and is healthy when finite)."""
    healthy = math.isfinite(max_loss) and math.isfinite(max_grad_norm)
    recent = [w for w in earlier if w.max_loss > 0][-RECENT_WINDOWS:]  # windows with steps in them
    if healthy and recent:
        healthy = max_loss <= spike_factor * statistics.median(
            w.max_loss for w in recent
        ) and max_grad_norm <= spike_factor * statistics.median(w.max_grad_norm for w in recent)
    return Window(step=step, max_loss=float(max_loss), max_grad_norm=float(max_grad_norm), healthy=healthy)


def last_known_good(windows: Sequence[Window], before: int | None = None) -> int | None:
    """The newest checkpoint step that ends a healthy window (optionally below `before`), or None."""
    steps = [w.step for w in windows if w.healthy and (before is None or w.step < before)]
    return max(steps) if steps else None


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What the rollbacks so far changed: the batches skipped (numbered `epoch * batches_per_epoch + index`), the
    factor on the learning rate, and a record of each rollback. Kept across rollbacks and in every checkpoint."""

    skip: frozenset[int] = frozenset()
    lr_scale: float = 1.0
    rollbacks: tuple[dict[str, Any], ...] = ()

    def after(self, bad_batch: int, restored_step: int, lr_factor: float, **record: Any) -> Recovery:
        scale = self.lr_scale * lr_factor
        entry = {"bad_batch": bad_batch, "restored_step": restored_step, "lr_scale": scale, **record}
        return Recovery(skip=self.skip | {bad_batch}, lr_scale=scale, rollbacks=(*self.rollbacks, entry))

    def to_json(self) -> dict[str, Any]:
        return {"skip": sorted(self.skip), "lr_scale": self.lr_scale, "rollbacks": list(self.rollbacks)}

    @classmethod
    def from_json(cls, saved: dict[str, Any] | None) -> Recovery:
        if not saved:
            return cls()
        return cls(
            skip=frozenset(saved["skip"]), lr_scale=float(saved["lr_scale"]), rollbacks=tuple(saved["rollbacks"])
        )


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; the run stopped without saving the bad state."""


class Diverged(Exception):
    """A non-finite step under `train.on_nonfinite="rollback"`: the loop rolls back (carries the host stats)."""

    def __init__(self, stats: Any):
        super().__init__(int(stats.bad_batch))
        self.stats = stats  # epoch_stats.EpochStats on the host


def describe_bad_step(stats: Any, steps_per_epoch: int) -> str:
    """Where the first non-finite step of `stats` (host `EpochStats`) was, and its loss and gradient norm."""
    bad_epoch, bad_index = divmod(int(stats.bad_batch), steps_per_epoch)
    return (
        f"non-finite loss ({float(stats.bad_loss)}) or gradient norm ({float(stats.bad_grad_norm)}) at epoch "
        f"{bad_epoch}, batch {bad_index}"
    )


def known_good_text(windows: Sequence[Window], directory: Any) -> str:
    """The last known good checkpoint, in words, for an error message."""
    good = last_known_good(windows)
    if good is None:
        return (
            "none (no checkpoint was saved before the divergence without a loss or gradient-norm spike in its window)"
        )
    return f"step {good} in {directory}"


def halted(stats: Any, steps_per_epoch: int, windows: Sequence[Window], directory: Any) -> NonFiniteLossError:
    """The error that stops a run whose step went non-finite (`train.on_nonfinite="halt"`), with how to recover."""
    hint = (
        ""
        if last_known_good(windows) is None
        else (
            ". To recover from it, rerun with --config.train.on_nonfinite=rollback "
            "--config.resume.allow_changes=train.on_nonfinite"
        )
    )
    return NonFiniteLossError(
        f"{describe_bad_step(stats, steps_per_epoch)}; the update was not applied and the run stopped. "
        f"Last known good checkpoint: {known_good_text(windows, directory)}{hint}"
    )


def why_no_rollback(windows: Sequence[Window], rollbacks: int, limit: int, directory: Any) -> str | None:
    """Why a divergence cannot be rolled back (no known good checkpoint, or `limit` rollbacks spent), or None."""
    good = last_known_good(windows)
    if good is None:
        return (
            "no known good checkpoint to roll back to (none was saved before the divergence without a loss or "
            "gradient-norm spike in its window)"
        )
    if rollbacks >= limit:
        return (
            f"{rollbacks} rollbacks (train.rollback_limit) did not keep the run finite; last known good checkpoint: "
            f"step {good} in {directory}; lower train.lr or set train.clip"
        )
    return None
