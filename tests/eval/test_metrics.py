"""avg@n and pass@k (unbiased and first-k) on inputs whose answers are known by hand."""

import itertools
import math

import numpy as np
import pytest

from bitune_jax.eval.metrics import avg_at_n, mean_pass_at_k_unbiased, pass_at_k_first, pass_at_k_unbiased


def test_avg_at_n():
    assert avg_at_n([[1, 0, 0, 0], [1, 1, 1, 1]]) == pytest.approx(0.625)
    assert avg_at_n([[0], [1], [1]]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (4, 1, 2, 0.5),  # 3 of the 6 pairs hold the correct sample
        (4, 0, 2, 0.0),
        (4, 4, 1, 1.0),
        (4, 1, 1, 0.25),  # pass@1 = c / n
        (16, 3, 1, 3 / 16),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct sample
        (10, 1, 10, 1.0),
    ],
)
def test_pass_at_k_unbiased_known(n, c, k, expected):
    assert pass_at_k_unbiased(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_unbiased_equals_binomials_and_subset_count():
    for n, c, k in itertools.product(range(1, 9), range(0, 9), range(1, 9)):
        if c > n or k > n:
            continue
        binom = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k_unbiased(n, c, k) == pytest.approx(binom, abs=1e-12)
    # The definition: the fraction of k-subsets of the samples with at least one correct.
    flags = [1, 0, 0, 1, 0, 0]
    subsets = list(itertools.combinations(flags, 3))
    assert pass_at_k_unbiased(6, 2, 3) == pytest.approx(np.mean([any(s) for s in subsets]))


def test_pass_at_k_unbiased_is_stable_for_large_n():
    value = pass_at_k_unbiased(2000, 3, 1000)  # C(2000, 1000) overflows a float
    assert value == pytest.approx(1 - 0.5**3, abs=1e-3) and np.isfinite(value)


def test_mean_and_first_k():
    correct = [
        [0, 1, 0, 0],  # correct only at sample 2
        [1, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    assert pass_at_k_first(correct, 1) == pytest.approx(1 / 3)
    assert pass_at_k_first(correct, 2) == pytest.approx(2 / 3)
    assert pass_at_k_first(correct, 4) == pytest.approx(2 / 3)
    assert mean_pass_at_k_unbiased(correct, 2) == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert mean_pass_at_k_unbiased(correct, 1) == pytest.approx(avg_at_n(correct))


@pytest.mark.parametrize(
    "call",
    [
        lambda: pass_at_k_unbiased(4, 5, 1),
        lambda: pass_at_k_unbiased(4, 1, 5),
        lambda: pass_at_k_unbiased(4, 1, 0),
        lambda: pass_at_k_first([[1, 0]], 3),
        lambda: avg_at_n([]),
        lambda: avg_at_n([1, 0]),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()
