"""PEFT settings as data: which method, which weights (a regex over parameter paths), how large."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

ALL_PROJECTIONS = r"layers/(q|k|v|o|gate|up|down)_proj"
IA3_TARGETS = r"layers/(k|v|down)_proj"  # keys, values and the MLP activation (the input of down_proj)


@dataclasses.dataclass(frozen=True)
class PeftConfig:
    method: Literal["lora", "dora", "ia3"] = "lora"
    rank: int = 8
    alpha: float = 16.0  # LoRA/DoRA scale is alpha / rank (Bitune's setup: alpha 1, rank 8)
    targets: str = ALL_PROJECTIONS  # re.fullmatch against '/'-joined parameter paths
    dropout: float = 0.0  # LoRA dropout on the adapter's input, in training only (a forward given a dropout key)

    def __post_init__(self):
        if self.method not in ("lora", "dora", "ia3"):
            raise ValueError(f"unknown PEFT method {self.method!r}; choose lora, dora or ia3")
        if self.method != "ia3" and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dropout and self.method != "lora":
            raise ValueError(f"dropout is a LoRA setting; method {self.method!r} does not use it (set dropout=0)")
        re.compile(self.targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank
