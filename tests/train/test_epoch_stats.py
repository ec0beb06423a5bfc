"""On-device epoch statistics: exact token counts, per-sample means, memorization, and the non-finite halt/skip."""

import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.train import epoch_stats


def metrics(correct, tokens, per_example, loss=1.0, finite=True):
    return {
        "correct": jnp.int32(correct),
        "tokens": jnp.int32(tokens),
        "loss": jnp.float32(loss),
        "per_example_accuracy": jnp.asarray(per_example, jnp.float32),
        "finite": jnp.bool_(finite),
        "grad_norm": jnp.float32(0.5),
    }


def test_token_weighted_and_per_sample_accuracy_memorization_and_filler_rows():
    stats = epoch_stats.empty(4)
    # a long row (90 of 100 tokens right) and a short one (1 of 10), then example 2 fully right, one filler row
    stats = epoch_stats.accumulate(stats, metrics(91, 110, [0.9, 0.1], loss=2.0), jnp.array([0, 1]), jnp.int32(0))
    stats = epoch_stats.accumulate(stats, metrics(5, 5, [1.0, 0.0], loss=1.0), jnp.array([2, -1]), jnp.int32(1))
    out = epoch_stats.summary(stats)
    assert out["token_accuracy"] == pytest.approx(96 / 115)
    assert out["sample_token_accuracy"] == pytest.approx((0.9 + 0.1 + 1.0) / 3)  # the filler row is not a sample
    assert out["loss"] == pytest.approx(1.5) and out["skipped_batches"] == 0
    assert out["memorized_fraction"] == pytest.approx(1 / 3)  # seen: 0, 1, 2; example 3 unseen
    assert np.asarray(stats.memorized).tolist() == [0, 0, 1, -1]
    assert epoch_stats.from_json(epoch_stats.to_json(stats))._asdict().keys() == stats._asdict().keys()
    for a, b in zip(epoch_stats.from_json(epoch_stats.to_json(stats)), stats):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_first_non_finite_step_halts_or_is_skipped():
    good, bad = metrics(1, 2, [0.5]), metrics(0, 2, [0.0], loss=float("nan"), finite=False)
    halted = epoch_stats.empty(2)
    for i, m in enumerate([good, bad, good, bad]):
        halted = epoch_stats.accumulate(halted, m, jnp.array([0]), jnp.int32(i))
    assert int(halted.bad_batch) == 1 and bool(halted.halted) and int(halted.steps) == 1  # nothing after batch 1
    assert np.isnan(float(halted.bad_loss)) and float(halted.bad_grad_norm) == 0.5
    skipped = epoch_stats.empty(2)
    for i, m in enumerate([good, bad, good, bad]):
        skipped = epoch_stats.accumulate(skipped, m, jnp.array([0]), jnp.int32(i), halt=False)
    assert int(skipped.bad_batch) == -1 and int(skipped.steps) == 2 and int(skipped.skipped) == 2


def test_old_checkpoint_statistics_are_refused_clearly():
    with pytest.raises(ValueError, match="written by an older bitune_jax"):
        epoch_stats.from_json({"correct": 1.0, "tokens": 2.0, "loss": 0.1, "steps": 1, "memorized": {}})
