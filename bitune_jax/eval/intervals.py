"""Confidence intervals for accuracy differences measured on the same items: the studies' "is it resolved?" rule.

Two runs scored on the same held-out items are compared item by item: resampling items (not runs) keeps the pairing,
so an item both runs find hard counts once, and the interval is much narrower than two independent binomial ones.
A difference whose interval contains 0 is unresolved; its sign is not a finding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Difference:
    """`mean(a) - mean(b)` over paired items, with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    items: int

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the sign of the difference is supported at this confidence."""
        return self.low > 0 or self.high < 0

    def describe(self) -> str:
        verdict = "resolved" if self.resolved else "unresolved"
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({verdict}, {self.items} items)"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "resolved": self.resolved}


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    groups: Sequence[int] | None = None,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """`mean(a) - mean(b)` with a paired percentile bootstrap over items.

    a, b: per-item scores (1/0 correctness, or a per-item mean over samples), item i of `a` paired with item i of
    `b`. groups: an optional per-item group id (e.g. the seed of the run an item pair came from); items are then
    resampled within each group, so every group keeps its size (pooled seeds stay balanced).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores need two equal-length non-empty vectors, got shapes {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = a - b
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    else:
        groups = np.asarray(groups)
        if groups.shape != diff.shape:
            raise ValueError(f"groups has shape {groups.shape}, the scores {diff.shape}")
        members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        idx = np.concatenate([m[rng.integers(0, m.size, size=(resamples, m.size))] for m in members], axis=1)
    means = diff[idx].mean(axis=1)  # [resamples]
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Difference(float(diff.mean()), float(low), float(high), confidence, int(diff.size))


def binomial_se(p: float, n: int) -> float:
    """The standard error of an accuracy `p` measured on `n` independent items."""
    return float(np.sqrt(max(p * (1 - p), 0.0) / max(n, 1)))
