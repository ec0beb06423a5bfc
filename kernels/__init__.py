"""Attention kernels behind one entry point: `kernels.attention(q, k, v, mask_spec=..., impl=...)`."""

from .attention import IMPLS, MaskSpec, attention, dense_mask, resolve_impl
from .blockwise_attention import blockwise_attention
from .flash_attention import BlockSizes, flash_attention
from .sequence_parallel import SequenceParallel, sequence_parallel_attention

__all__ = [
    "IMPLS",
    "BlockSizes",
    "MaskSpec",
    "SequenceParallel",
    "attention",
    "blockwise_attention",
    "dense_mask",
    "flash_attention",
    "resolve_impl",
    "sequence_parallel_attention",
]
