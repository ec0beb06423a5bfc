"""Bitune settings, including the paper's ablation switches, as data."""

from __future__ import annotations

import dataclasses
from typing import Literal

from bitune_jax.peft import PeftConfig


@dataclasses.dataclass(frozen=True)
class BituneConfig:
    peft: PeftConfig = PeftConfig(method="lora", rank=8, alpha=1.0)  # the paper: rank 8, lora_alpha 1
    tau: float = 0.01  # alpha = |w| / (tau + |w|); small tau makes alpha move fast
    w_init: float | None = None  # initial w; None means tau (alpha starts at 0.5)
    mixing: Literal["per_layer", "per_kv_head"] = "per_layer"
    learn_alpha: bool = True  # False: alpha stays at its initial value (the fixed-alpha ablation)
    bidirectional: bool = True  # False: the second prompt stream is causal too (the attention ablation)
    shared_adapters: bool = False  # True: both prompt streams use the `causal` adapter set

    def __post_init__(self):
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.mixing not in ("per_layer", "per_kv_head"):
            raise ValueError(f"mixing must be 'per_layer' or 'per_kv_head', got {self.mixing!r}")

    @property
    def initial_w(self) -> float:
        return self.tau if self.w_init is None else self.w_init

    @property
    def adapter_sets(self) -> tuple[str, ...]:
        return ("causal",) if self.shared_adapters else ("causal", "bidir")
