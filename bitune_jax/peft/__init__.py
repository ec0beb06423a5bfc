"""Parameter-efficient fine-tuning as data: LoRA, DoRA and IA3 adapter pytrees beside a frozen base."""

from bitune_jax.peft.adapters import Adapters, dense, init_adapters, merge, merge_kernel, unmerge
from bitune_jax.peft.config import ALL_PROJECTIONS, IA3_TARGETS, PeftConfig

__all__ = [
    "ALL_PROJECTIONS",
    "IA3_TARGETS",
    "Adapters",
    "PeftConfig",
    "dense",
    "init_adapters",
    "merge",
    "merge_kernel",
    "unmerge",
]
