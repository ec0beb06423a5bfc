"""Attention kernels behind one entry point: `kernels.attention(q, k, v, mask_spec=..., impl=...)`."""

from kernels.attention import IMPLS, MaskSpec, attention, dense_mask
from kernels.flash_attention import BlockSizes, flash_attention

__all__ = ["IMPLS", "BlockSizes", "MaskSpec", "attention", "dense_mask", "flash_attention"]
