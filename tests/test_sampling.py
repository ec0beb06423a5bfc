import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.sampling import SamplingConfig, sample_rows, sample_token

PROBS = np.array([0.5, 0.3, 0.15, 0.05], np.float32)


def _draw(cfg, n=4000):
    logits = jnp.log(jnp.asarray(np.tile(PROBS, (n, 1))))
    return np.asarray(sample_token(logits, jax.random.key(0), cfg))


def test_greedy_is_argmax():
    logits = jnp.asarray([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert sample_token(logits, jax.random.key(0), SamplingConfig()).tolist() == [1, 0]


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    draws = _draw(SamplingConfig(temperature=1.0, top_p=0.7))
    assert set(np.unique(draws)) == {0, 1}  # 0.5 < 0.7 <= 0.8: the crossing token is kept
    assert abs((draws == 0).mean() - 0.5 / 0.8) < 0.03


def test_top_k_and_plain_temperature():
    assert set(np.unique(_draw(SamplingConfig(temperature=1.0, top_k=2)))) == {0, 1}
    freq = np.bincount(_draw(SamplingConfig(temperature=1.0)), minlength=4) / 4000
    np.testing.assert_allclose(freq, PROBS, atol=0.03)


def test_invalid_settings():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            SamplingConfig(temperature=bad)


def test_each_row_samples_by_its_own_settings():
    """An engine's rows belong to different requests: greedy, top-k 2, top-p 0.7 and plain T=1 side by side
    follow `sample_token`'s distributions for those settings."""
    n, settings = 4000, [(0.0, 1.0, 0), (1.0, 1.0, 2), (1.0, 0.7, 0), (1.0, 1.0, 0)]
    temperature, top_p, top_k = (jnp.asarray(np.repeat(col, n)) for col in zip(*settings))
    logits = jnp.log(jnp.asarray(np.tile(PROBS, (4 * n, 1))))
    keys = jax.random.split(jax.random.key(0), 4 * n)
    draws = np.asarray(sample_rows(logits, keys, temperature, top_p, top_k)).reshape(4, n)
    assert set(np.unique(draws[0])) == {0}
    assert set(np.unique(draws[1])) == {0, 1} and abs((draws[1] == 0).mean() - 0.5 / 0.8) < 0.03
    assert set(np.unique(draws[2])) == {0, 1} and abs((draws[2] == 0).mean() - 0.5 / 0.8) < 0.03
    np.testing.assert_allclose(np.bincount(draws[3], minlength=4) / n, PROBS, atol=0.03)


@pytest.mark.parametrize("vocab", [64, 3000])
def test_the_nucleus_without_a_sort_is_the_sorted_prefix(vocab):
    """`_nucleus` (bisection) keeps what the sort-and-cumsum definition keeps: random rows, ties and -inf included.
    At 3,000 tokens both of its paths run: peaked rows whose nucleus lies among the 64 most likely tokens (sums over
    those only), and flat rows where it does not (sums over the whole vocabulary), side by side in one batch. Not
    p = 0.999 there: the crossing token then sits in a long flat tail where float32 sums of ~3,000 terms and a
    sequential cumsum differ in the last bit (the bisection over the whole vocabulary alone, before the candidates,
    disagreed with this reference on 14 of the 200 rows, the new one on 13)."""
    from bitune_jax.sampling import CANDIDATES, _nucleus

    rng = np.random.default_rng(0)
    scale = rng.uniform(0.1, 8, size=(200, 1)).astype(np.float32)
    logits = rng.normal(size=(200, vocab)).astype(np.float32) * scale
    logits[::7, :8] = logits[::7, 8:16]  # ties
    logits[::5, -10:] = -np.inf  # a top-k cut before
    covered = set()
    for p in (0.1, 0.5, 0.9, 0.95, 0.999)[: 5 if vocab <= CANDIDATES else 4]:
        desc = -np.sort(-logits, axis=1)
        probs = np.asarray(jax.nn.softmax(jnp.asarray(desc), axis=-1))
        mass_before = np.cumsum(probs, axis=1) - probs
        cutoff = desc[np.arange(200), (mass_before < p).sum(1) - 1][:, None]
        got = np.asarray(_nucleus(jnp.asarray(logits), jnp.full((200,), p)))
        np.testing.assert_array_equal(got, logits >= cutoff)
        covered |= set(probs[:, :CANDIDATES].sum(1) >= p)
    assert covered == ({True, False} if vocab > CANDIDATES else {True})


def test_rows_draw_from_the_top_k_then_top_p_cut():
    """`sample_rows` (one set of candidates for both cuts) draws what a categorical over the sorted definition's
    kept set draws with the same key: top-k of the scaled logits, then the smallest prefix of what is left whose
    mass reaches p, per row, at 3,000 tokens (so the candidates cover some rows and not others)."""
    rows, vocab = 96, 3000
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(rows, vocab)).astype(np.float32) * rng.uniform(0.1, 8, size=(rows, 1)).astype(np.float32)
    settings = [(t, p, k) for t in (0.6, 1.0) for p in (1.0, 0.5, 0.95) for k in (0, 5, 40, 100)]
    temperature, top_p, top_k = (np.asarray(np.resize(col, rows)) for col in zip(*settings))
    temperature, top_p, top_k = temperature.astype(np.float32), top_p.astype(np.float32), top_k.astype(np.int32)
    keys = jax.random.split(jax.random.key(3), rows)
    scaled = logits / temperature[:, None]
    desc = -np.sort(-scaled, axis=1)
    kth = np.where(top_k > 0, desc[np.arange(rows), np.maximum(top_k, 1) - 1], -np.inf)[:, None]
    cut = np.where(scaled >= kth, scaled, -np.inf)
    desc = -np.sort(-cut, axis=1)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(desc), axis=-1))
    cutoff = desc[np.arange(rows), ((np.cumsum(probs, axis=1) - probs) < top_p[:, None]).sum(1) - 1][:, None]
    kept = np.where((cut >= cutoff) | (top_p[:, None] >= 1), cut, -np.inf)
    want = np.asarray(jax.vmap(jax.random.categorical)(keys, jnp.asarray(kept)))
    got = np.asarray(sample_rows(jnp.asarray(logits), keys, *map(jnp.asarray, (temperature, top_p, top_k))))
    np.testing.assert_array_equal(got, want)
    assert len(set(want.tolist())) > 10  # the draws are not all one token
