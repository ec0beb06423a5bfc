"""The saturation rule on scripted per-epoch token accuracies (docs/method.md A)."""

import pytest

from bitune_jax.train.saturation import SaturationConfig, check_saturation, updates_saved


def first_stop(accuracies, config):
    """Replay the loop: ask after every epoch, return the first decision that stops (or None)."""
    for epoch in range(1, len(accuracies) + 1):
        decision = check_saturation(accuracies[:epoch], config)
        if decision.stop:
            return decision
    return None


def test_threshold_fires_at_first_epoch_reaching_it():
    acc = [0.40, 0.62, 0.80, 0.93, 0.985, 0.991, 0.999]
    d = first_stop(acc, SaturationConfig(threshold=0.99, window=0))
    assert (d.epoch, d.reason, d.saturation_epoch) == (6, "threshold", 6)
    assert d.accuracy == pytest.approx(0.991)


def test_plateau_fires_after_flat_window_and_names_last_progress_epoch():
    acc = [0.40, 0.70, 0.85, 0.8505, 0.8508, 0.8509, 0.8509]
    d = first_stop(acc, SaturationConfig(threshold=0.99, window=3, delta=1e-3))
    # epochs 4..6 beat the best of epochs 1..3 (0.85 at epoch 3) by 0.0009 < 0.001
    assert (d.epoch, d.reason, d.saturation_epoch) == (6, "plateau", 3)
    assert d.gain == pytest.approx(0.0009)


def test_plateau_ignores_a_single_noisy_dip():
    acc = [0.5, 0.9, 0.7, 0.91, 0.95, 0.97, 0.99]  # a dip at epoch 3 is not a plateau
    assert first_stop(acc, SaturationConfig(threshold=None, window=2, delta=0.005)) is None


def test_neither_fires_while_improving():
    acc = [0.3 + 0.05 * i for i in range(12)]  # 0.30 ... 0.85
    assert first_stop(acc, SaturationConfig()) is None
    d = check_saturation(acc, SaturationConfig())
    assert not d.stop and d.reason is None and d.saturation_epoch is None
    assert d.gain == pytest.approx(0.15)


def test_min_epochs_is_honoured():
    acc = [0.995, 0.996, 0.997, 0.998]
    assert first_stop(acc, SaturationConfig(min_epochs=1)).epoch == 1
    d = first_stop(acc, SaturationConfig(min_epochs=3))
    assert (d.epoch, d.reason, d.saturation_epoch) == (3, "threshold", 3)


def test_disabled_and_rule_switches():
    flat = [0.5, 0.5, 0.5, 0.5, 0.5]
    assert first_stop(flat, SaturationConfig(enabled=False)) is None
    assert first_stop(flat, SaturationConfig(window=0)) is None
    assert first_stop([1.0], SaturationConfig(threshold=None, window=0)) is None
    assert first_stop(flat, SaturationConfig(window=2)).reason == "plateau"


def test_as_log_is_floats_only():
    log = check_saturation([0.2, 0.4], SaturationConfig()).as_log()
    assert all(isinstance(v, float) for v in log.values())


@pytest.mark.parametrize(
    "kwargs, field, exc",
    [
        ({"threshold": 1.5}, "threshold", ValueError),
        ({"threshold": 0.0}, "threshold", ValueError),
        ({"threshold": "0.9"}, "threshold", TypeError),
        ({"window": -1}, "window", ValueError),
        ({"window": 2.5}, "window", TypeError),
        ({"delta": -0.1}, "delta", ValueError),
        ({"delta": float("nan")}, "delta", TypeError),
        ({"min_epochs": 0}, "min_epochs", ValueError),
        ({"enabled": "yes"}, "enabled", TypeError),
    ],
)
def test_invalid_config_names_the_field(kwargs, field, exc):
    with pytest.raises(exc, match=f"SaturationConfig.{field}"):
        SaturationConfig(**kwargs)


def test_from_mapping_rejects_unknown_keys():
    assert SaturationConfig.from_mapping({"threshold": 0.95}).threshold == 0.95
    with pytest.raises(KeyError, match="treshold"):
        SaturationConfig.from_mapping({"treshold": 0.95})


def test_bad_accuracies_are_errors():
    with pytest.raises(ValueError, match="at least one"):
        check_saturation([])
    with pytest.raises(ValueError, match="epoch 2"):
        check_saturation([0.5, float("nan")])


def test_updates_saved():
    assert updates_saved(51_200, 12_800) == 38_400
    assert updates_saved(100, 100) == 0
    with pytest.raises(ValueError, match="exceeds"):
        updates_saved(10, 11)
    with pytest.raises(ValueError, match="updates_done"):
        updates_saved(10, -1)
