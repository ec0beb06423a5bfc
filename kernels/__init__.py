"""Attention kernels behind one entry point: `kernels.attention(q, k, v, mask_spec=..., impl=...)`."""

from kernels.attention import IMPLS, MaskSpec, attention, dense_mask

__all__ = ["IMPLS", "MaskSpec", "attention", "dense_mask"]
