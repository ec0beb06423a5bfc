"""The saturation check: stop adding epochs once epoch token accuracy has memorized the data or stopped improving.

docs/method.md A: the paper finds that, under a fixed budget of updates, repetition gains plateau when training token
accuracy reaches full memorization, so epochs after that would spend budget for little (a claim this project's
toy-scale studies test, not a law). The loop asks `check_saturation` after every epoch and reports the saturation
epoch and the updates that stopping saves (`updates_saved`).

Everything here is pure (a list of floats in, a frozen dataclass out) so the rule is tested on scripted accuracy
sequences without a model, and a resumed run that replays its per-epoch accuracies reaches the same decision.
Epochs are counted from 1: "epoch 3" is the third completed epoch, `accuracies[2]`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Reason = Literal["threshold", "plateau"]
MODES = ("anneal", "stop", "observe")
METRICS = ("token_accuracy", "sample_token_accuracy")


@dataclasses.dataclass(frozen=True)
class SaturationConfig:
    """When to stop adding epochs.

    threshold: stop once an epoch's token accuracy is >= this. Default 0.99: full memorization in the paper is ~1.0
        token accuracy, but a run at ~1.0 still carries a few tokens that never fit, such as bf16 argmax ties
        between two equally likely tokens or genuinely ambiguous tokens (the same prefix continued differently in
        two samples), so demanding exactly 1.0 would never fire. None disables this rule.
    window, delta: stop once the best accuracy of the last `window` epochs beats the best of all earlier epochs by
        less than `delta` (accuracy has stopped improving). Comparing bests rather than two single epochs keeps
        one noisy epoch from firing or blocking the rule. Defaults 3 epochs and 0.001 (a tenth of a point of token
        accuracy): late-epoch gains in a repetition run are slow but steady, well above that. window=0 disables
        this rule.
    min_epochs: never stop before this many epochs have completed (guards the first, still-warming-up epochs).
    enabled: False turns the whole check off (the run trains every planned epoch).
    mode: what saturation does. "anneal" (default): the learning rate is re-planned to fall linearly from its
        current value to 0 over `anneal_updates` more updates and the run ends there, annealed, as a complete run
        of that length would (the paper compares complete runs). "stop": end after this epoch, the learning rate
        wherever the schedule had it. "observe": log the saturation epoch and train every planned epoch (what the
        paper did).
    anneal_updates: the anneal's length in optimizer updates; 0 means as many as the warmup (at least 1). Never
        past the planned budget.
    metric: which epoch accuracy the rule reads: "sample_token_accuracy" (default: the mean of each sample's own
        accuracy, what the paper's "token accuracy" is: the authors log `train/token_acc` per step of one sample
        and average it over 100-step windows) or "token_accuracy" (over all answer tokens, so long traces weigh
        more).
    """

    threshold: float | None = 0.99
    window: int = 3
    delta: float = 1e-3
    min_epochs: int = 1
    enabled: bool = True
    mode: str = "anneal"
    anneal_updates: int = 0
    metric: str = "sample_token_accuracy"

    def __post_init__(self) -> None:
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real):
                raise TypeError(f"SaturationConfig.threshold must be a float in (0, 1] or None, got {self.threshold!r}")
            if not 0.0 < self.threshold <= 1.0 or math.isnan(self.threshold):
                raise ValueError(f"SaturationConfig.threshold must be in (0, 1] (token accuracy), got {self.threshold}")
        _check_int("SaturationConfig.window", self.window, minimum=0)
        _check_int("SaturationConfig.min_epochs", self.min_epochs, minimum=1)
        if isinstance(self.delta, bool) or not isinstance(self.delta, numbers.Real) or math.isnan(self.delta):
            raise TypeError(f"SaturationConfig.delta must be a float, got {self.delta!r}")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"SaturationConfig.delta must be in [0, 1] (a token accuracy gain), got {self.delta}")
        if not isinstance(self.enabled, bool):
            raise TypeError(f"SaturationConfig.enabled must be a bool, got {self.enabled!r}")
        if self.mode not in MODES:
            raise ValueError(f"SaturationConfig.mode must be one of {MODES}, got {self.mode!r}")
        _check_int("SaturationConfig.anneal_updates", self.anneal_updates, minimum=0)
        if self.metric not in METRICS:
            raise ValueError(f"SaturationConfig.metric must be one of {METRICS}, got {self.metric!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SaturationConfig:
        """Build from a config section (a dict or `ml_collections.ConfigDict`); unknown keys are errors."""
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown saturation config key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class SaturationDecision:
    """The answer after one epoch.

    stop: end training after this epoch.
    reason: which rule fired ("threshold" or "plateau"), None when not stopping.
    saturation_epoch: the epoch at which accuracy saturated, None when not stopping. For "threshold" it is the
        current epoch (the first to reach the threshold). For "plateau" it is the epoch holding the best accuracy
        before the flat window, the last epoch that made progress worth its updates.
    epoch: epochs completed so far (len of the accuracies).
    accuracy: the latest epoch accuracy.
    gain: best of the last `window` epochs minus best before them; None until there are window + 1 epochs.
    """

    stop: bool
    reason: Reason | None
    saturation_epoch: int | None
    epoch: int
    accuracy: float
    gain: float | None

    def as_log(self) -> dict[str, float]:
        """Floats for the metrics log (-1 for "not yet"), so a JSONL row never holds a None."""
        return {
            "saturation/stop": float(self.stop),
            "saturation/epoch": float(self.saturation_epoch if self.saturation_epoch is not None else -1),
            "saturation/gain": float(self.gain if self.gain is not None else -1.0),
        }


def check_saturation(accuracies: Sequence[float], config: SaturationConfig | None = None) -> SaturationDecision:
    """Decide, after the latest epoch, whether to stop adding epochs.

    accuracies: per-epoch token accuracy of every epoch completed so far, oldest first.
    config: the rule; None uses the defaults.
    The threshold rule is checked before the plateau rule, so a run that memorized its data reports "threshold".
    """
    config = SaturationConfig() if config is None else config
    acc = [float(a) for a in accuracies]
    if not acc:
        raise ValueError("check_saturation needs at least one epoch accuracy; call it after an epoch completes")
    for i, a in enumerate(acc):
        if not math.isfinite(a) or not 0.0 <= a <= 1.0:
            raise ValueError(f"epoch {i + 1} token accuracy must be a finite number in [0, 1], got {a}")
    epoch, latest = len(acc), acc[-1]
    gain = None
    if config.window > 0 and epoch > config.window:
        gain = max(acc[-config.window :]) - max(acc[: -config.window])
    go_on = SaturationDecision(False, None, None, epoch, latest, gain)
    if not config.enabled or epoch < config.min_epochs:
        return go_on
    if config.threshold is not None and latest >= config.threshold:
        return SaturationDecision(True, "threshold", epoch, epoch, latest, gain)
    if gain is not None and gain < config.delta:
        before = acc[: -config.window]
        return SaturationDecision(True, "plateau", before.index(max(before)) + 1, epoch, latest, gain)
    return go_on


def anneal_length(config: SaturationConfig, warmup_updates: int, updates_done: int, updates_planned: int) -> int:
    """Updates of the anneal that follows saturation at `updates_done`: `anneal_updates`, or the warmup's length
    when 0 (at least 1), never past the planned budget (0 when the budget is spent)."""
    want = config.anneal_updates or max(warmup_updates, 1)
    return max(min(want, updates_planned - updates_done), 0)


def updates_saved(total_updates_planned: int, updates_done: int) -> int:
    """Optimizer updates a saturation stop frees under a fixed budget (what the paper's budget grid would spend)."""
    _check_int("total_updates_planned", total_updates_planned, minimum=0)
    _check_int("updates_done", updates_done, minimum=0)
    if updates_done > total_updates_planned:
        raise ValueError(f"updates_done ({updates_done}) exceeds total_updates_planned ({total_updates_planned})")
    return total_updates_planned - updates_done


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
