"""What a checkpoint carries besides the weights: where the data is, the epochs so far, saturation, the checkpoint
windows and divergence recovery. One record that writes itself into a checkpoint's metadata and reads itself back,
so a resume (and a rollback) restores exactly what a save wrote. Also `due`, the one rule for periodic actions."""

from __future__ import annotations

import dataclasses
from typing import Any

from bitune_jax.train import epoch_stats
from bitune_jax.train.divergence import Recovery, Window


@dataclasses.dataclass
class Progress:
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # one summary per finished epoch
    start_eval: dict[str, float] = dataclasses.field(default_factory=dict)  # the evals before training (at_start)
    saturated: dict[str, Any] | None = None  # the first saturation: epoch, reason, the update it was found at
    anneal: dict[str, int] | None = None  # after a saturation in mode "anneal": the schedule's new tail
    windows: list[Window] = dataclasses.field(default_factory=list)  # one per save: its steps' health
    recovery: Recovery = dataclasses.field(default_factory=Recovery)  # what divergence rollbacks changed

    def to_meta(self, data: dict[str, int], accumulators: epoch_stats.EpochStats, config: dict) -> dict[str, Any]:
        """The checkpoint metadata: this record, the data iterator's state and the epoch accumulators (host)."""
        return {
            "data": data,
            "epoch_accumulators": epoch_stats.to_json(accumulators),
            "history": self.history,
            "start_eval": self.start_eval,
            "saturated": self.saturated,
            "anneal": self.anneal,
            "windows": [w.to_json() for w in self.windows],
            "recovery": self.recovery.to_json(),
            "config": config,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> tuple[Progress, dict[str, int], epoch_stats.EpochStats]:
        """`(progress, data iterator state, epoch accumulators)` as `to_meta` wrote them."""
        progress = cls(
            history=meta["history"],
            start_eval=meta.get("start_eval", {}),
            saturated=meta.get("saturated"),
            anneal=meta.get("anneal"),
            windows=[Window.from_json(w) for w in meta.get("windows", [])],
            recovery=Recovery.from_json(meta.get("recovery")),
        )
        return progress, meta["data"], epoch_stats.from_json(meta["epoch_accumulators"])


def due(count: int, every: int, last: bool = False) -> bool:
    """Whether a periodic action runs at `count` (a step or an epoch, 1-based): every `every`-th (0: never), and
    always at the `last` one if asked."""
    return last or (every > 0 and count % every == 0)
