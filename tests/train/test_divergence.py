"""Which checkpoint is known good (loss and gradient-norm spikes against the recent windows) and the rollback
record, as pure functions; the loop's use of them is in test_loop.py."""

import math

from bitune_jax.train.divergence import Recovery, Window, judge, last_known_good


def windows(*maxima):
    out = []
    for step, (loss, grad) in enumerate(maxima, 1):
        out.append(judge(step * 10, loss, grad, out, spike_factor=3.0))
    return out


def test_the_first_finite_window_is_healthy_and_a_non_finite_one_never_is():
    assert judge(10, 2.0, 5.0, [], 3.0).healthy
    assert not judge(10, math.nan, 5.0, [], 3.0).healthy
    assert not judge(20, 1.0, math.inf, windows((2.0, 5.0)), 3.0).healthy


def test_a_loss_or_gradient_norm_spike_marks_its_window_and_the_known_good_step_stays_before_it():
    ws = windows((2.0, 1.0), (1.8, 1.1), (1.7, 0.9), (6.0, 1.0), (1.6, 1.0), (1.5, 4.0))
    assert [w.healthy for w in ws] == [True, True, True, False, True, False]
    assert last_known_good(ws) == 50
    assert last_known_good(ws[:4]) == 30  # the spike's own checkpoint is not good
    assert last_known_good(ws, before=50) == 30
    assert last_known_good([]) is None


def test_the_reference_is_the_median_of_recent_windows_so_one_spike_does_not_move_it():
    ws = windows((1.0, 1.0), (1.0, 1.0), (50.0, 1.0), (2.9, 1.0))
    assert [w.healthy for w in ws] == [True, True, False, True]


def test_recovery_accumulates_skips_and_the_learning_rate_scale_and_round_trips_through_json():
    r = Recovery().after(8, 6, 0.5, found_at_step=9).after(20, 18, 0.5)
    assert r.skip == {8, 20} and r.lr_scale == 0.25
    assert [x["restored_step"] for x in r.rollbacks] == [6, 18]
    assert Recovery.from_json(r.to_json()) == r
    assert Recovery.from_json(None) == Recovery()
    assert Window.from_json(Window(4, 1.0, 2.0, True).to_json()) == Window(4, 1.0, 2.0, True)
