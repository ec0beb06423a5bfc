"""Paired bootstrap intervals: the rule the studies use to call a difference resolved or not."""

import numpy as np
import pytest

from bitune_jax.eval.intervals import binomial_se, paired_bootstrap


def test_identical_runs_give_a_zero_width_unresolved_interval():
    a = np.random.default_rng(0).integers(0, 2, 200)
    d = paired_bootstrap(a, a)
    assert d.estimate == d.low == d.high == 0.0 and not d.resolved


def test_a_clear_gain_is_resolved_and_the_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    b = rng.integers(0, 2, 500)
    a = np.where(rng.random(500) < 0.3, 1, b)  # a fixes ~30% of b's misses, never breaks a hit
    d = paired_bootstrap(a, b, seed=3)
    assert d.low <= d.estimate <= d.high and d.low > 0 and d.resolved
    assert d.estimate == pytest.approx(a.mean() - b.mean())


def test_pairing_narrows_the_interval_against_independent_errors():
    """Two runs that agree on most items: the paired interval is far narrower than the unpaired binomial one."""
    rng = np.random.default_rng(2)
    b = rng.integers(0, 2, 400)
    a = b.copy()
    flip = rng.choice(400, 12, replace=False)
    a[flip] = 1 - a[flip]
    d = paired_bootstrap(a, b)
    unpaired_half_width = 1.96 * np.hypot(binomial_se(a.mean(), 400), binomial_se(b.mean(), 400))
    assert (d.high - d.low) / 2 < unpaired_half_width / 3


def test_grouped_resampling_keeps_group_sizes_and_a_noise_difference_is_unresolved():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    d = paired_bootstrap(a, b, groups=np.repeat([42, 43, 44], 100))
    assert not d.resolved and d.items == 300
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)  # seeded: a rerun reports the same


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="groups"):
        paired_bootstrap([1, 0], [1, 1], groups=[0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1, 0], [1, 1], confidence=1.5)
