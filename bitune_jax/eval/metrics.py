"""Sampling metrics over a `[questions, n]` table of correct flags (docs/method.md A): avg@n and pass@k, two ways.

* avg@n: mean correctness over all n samples of every question, the usual pass@1 estimate.
* pass@k, unbiased (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): with `c` of `n` samples
  correct, the probability that a random subset of `k` samples holds at least one correct answer,
  `1 - C(n - c, k) / C(n, k)`. It uses all n samples, so it has lower variance than looking at k of them.
* pass@k, first k ("any of the first k samples correct"): what the authors' code reports. Its expectation equals the
  unbiased estimator's, but it depends on sample order and throws away n - k samples.
Reports should name which estimator a number comes from; `bitune_jax.eval.reasoning` reports both.
"""

from __future__ import annotations

import numpy as np


def _table(correct) -> np.ndarray:
    table = np.asarray(correct, dtype=bool)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError(f"correct must be a non-empty [questions, n] table of flags, got shape {table.shape}")
    return table


def avg_at_n(correct) -> float:
    """Mean over questions of the fraction of that question's n samples that are correct."""
    return float(_table(correct).mean())


def pass_at_k_unbiased(n: int, c: int, k: int) -> float:
    """`1 - C(n - c, k) / C(n, k)` for one question, as the stable product `1 - prod_{i=n-c+1}^{n} (1 - k / i)`.

    The binomials overflow floats for n in the hundreds; the product form never forms them.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k_unbiased(correct, k: int) -> float:
    """The unbiased pass@k of every question (its n samples, c of them correct), averaged over questions."""
    table = _table(correct)
    n = table.shape[1]
    return float(np.mean([pass_at_k_unbiased(n, int(c), k) for c in table.sum(axis=1)]))


def pass_at_k_first(correct, k: int) -> float:
    """The authors' pass@k: the fraction of questions with a correct answer among their first k samples."""
    table = _table(correct)
    if not 1 <= k <= table.shape[1]:
        raise ValueError(f"need 1 <= k <= n={table.shape[1]}, got k={k}")
    return float(table[:, :k].any(axis=1).mean())
