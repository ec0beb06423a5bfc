"""The attention entry point used by every model and by Bitune: `attention(..., impl=...)` and `resolve_impl`.

The mask is a `MaskSpec` (`kernels.mask`, re-exported here with `dense_mask` for the callers that import them from
this module). The XLA implementation here materializes the dense mask from the spec and is the ground truth every
other implementation is tested against; the others live in their own modules, none of which imports this one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import self_check
from .blockwise_attention import blockwise_attention
from .flash_attention import flash_attention
from .mask import MaskSpec, dense_mask
from .sequence_parallel import SequenceParallel, sequence_parallel_attention

IMPLS = ("xla", "blockwise", "pallas", "auto")
# "auto" (see `resolve_impl`): short query blocks (decode) -> xla; gpu/tpu -> pallas; long sequences elsewhere ->
# blockwise; else xla.
PALLAS_MIN_Q = 128  # the kernels' query tile: a shorter query block (decode) would be padded to it
BLOCKWISE_MIN_SCORES = 4096 * 4096  # from here on (q_len x kv_len per head) the dense scores are not worth holding
PALLAS_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")  # where "auto" may pick Pallas (after its self-check)

__all__ = ["IMPLS", "MaskSpec", "attention", "dense_mask", "resolve_impl"]


def _xla_attention(q, k, v, spec: MaskSpec, scale: float, logit_softcap: float | None, kv_layout: str = "bshd"):
    """Dense-mask attention: `[batch, heads, q_len, kv_len]` float32 scores, so only for short sequences.
    `kv_layout="bhsd"`: k and v are `[batch, kv_heads, kv_len, head_dim]` (a decode cache's layout), so the batched
    dots read each head's keys in place instead of a transposed copy."""
    batch, q_len, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1 if kv_layout == "bhsd" else 2]
    groups = num_heads // num_kv_heads
    # GQA without repeating K/V: fold query heads into [kv_heads, groups].
    qg = q.reshape(batch, q_len, num_kv_heads, groups, head_dim)
    q_dims = "btkgd"
    if kv_layout == "bshd":  # training and prefill: every operand head-major, so each dot is a plain batched
        # matmul over (row, KV head): forward + backward 59 -> 54 ms a layer (SmolLM2, 8 x 256 tokens). A decode
        # step (one query a row) runs faster with the query as it comes.
        qg, q_dims = qg.transpose(0, 2, 3, 1, 4), "bkgtd"
        k, v = (jnp.swapaxes(x, 1, 2) for x in (k, v))  # [b, k, s, d]
    scores = jnp.einsum(f"{q_dims},bksd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    if logit_softcap is not None:
        scores = jnp.tanh(scores / logit_softcap) * logit_softcap
    mask = dense_mask(spec)[:, None, None]  # [batch, 1, 1, q_len, kv_len]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(mask.any(-1, keepdims=True), probs, 0.0)  # rows with nothing visible give zeros
    # Per (row, KV head), then the small output transposed: asked for in [b, t, k, g, d] order, XLA:CPU ran this
    # dot 5x slower (SmolLM2 decode, 16 rows x 704 cache slots: 97 -> 20 ms over 30 layers).
    out = jnp.einsum("bkgts,bksd->bkgtd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out.transpose(0, 3, 1, 2, 4)  # [b, t, k, g, d]
    return out.reshape(batch, q_len, num_heads, head_dim).astype(q.dtype)


def resolve_impl(impl: str, q_len: int, kv_len: int, platform: str | None = None) -> str:
    """The implementation `impl` means for these static lengths on `platform` (default: JAX's default backend)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; choose from {IMPLS}")
    if impl != "auto":
        return impl
    platform = platform or jax.default_backend()
    if q_len < PALLAS_MIN_Q:
        return "xla"  # decode: [heads, q_len, kv_len] scores are small; a flash tile would pad q to 128 rows
    if platform in PALLAS_PLATFORMS:
        return "pallas"
    return "blockwise" if q_len * kv_len >= BLOCKWISE_MIN_SCORES else "xla"


def attention(
    q: jax.Array,  # [batch, q_len, heads, head_dim]
    k: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    v: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    *,
    mask_spec: MaskSpec,
    scale: float,
    logit_softcap: float | None = None,
    impl: str = "xla",
    sequence_parallel: SequenceParallel | None = None,  # tokens split over a mesh axis
    kv_layout: str = "bshd",  # "bhsd": k, v are [batch, kv_heads, kv_len, head_dim] (a decode cache)
) -> jax.Array:  # [batch, q_len, heads, head_dim]
    """Attention of `q` over `k, v` with `mask_spec` visibility.

    `impl`: "xla" (dense-mask reference), "blockwise" (`kernels.blockwise_attention`: XLA, O(q_len x block)
    memory), "pallas" (`kernels.flash_attention`; kernels chosen when lowering: Triton on GPU, Mosaic on TPU,
    interpret mode on CPU), "auto" (`resolve_impl`, decided at trace time from the per-shard lengths, so export a
    Pallas kernel from a CPU host with impl="pallas"). With `sequence_parallel` (and its axis larger than 1) each
    device attends with its own query slice over keys gathered from every slice.
    """
    if kv_layout not in ("bshd", "bhsd"):
        raise ValueError(f"kv_layout must be 'bshd' or 'bhsd', got {kv_layout!r}")
    parts = sequence_parallel.size if sequence_parallel is not None else 1
    if kv_layout == "bhsd":  # the dense path reads it in place; the others take [batch, kv_len, kv_heads, head_dim]
        if q.shape[2] % k.shape[1]:
            raise ValueError(f"query heads {q.shape[2]} are not a multiple of key/value heads {k.shape[1]}")
        if parts == 1 and resolve_impl(impl, q.shape[1], k.shape[2]) == "xla":
            return _xla_attention(q, k, v, mask_spec, scale, logit_softcap, kv_layout)
        k, v = (jnp.swapaxes(x, 1, 2) for x in (k, v))
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads {q.shape[2]} are not a multiple of key/value heads {k.shape[2]}")
    requested, impl = impl, resolve_impl(impl, -(-q.shape[1] // parts), k.shape[1])
    if requested == "auto" and impl == "pallas":  # only a kernel verified on this platform and combination
        key = self_check.KernelKey.of(q, mask_spec, logit_softcap, jax.default_backend())
        impl = self_check.verified_impl(key, _pallas, _xla_attention)
    local = functools.partial(_local_attention, impl=impl, scale=scale, logit_softcap=logit_softcap)
    if parts > 1:
        return sequence_parallel_attention(local, q, k, v, mask_spec, sequence_parallel)
    return local(q, k, v, mask_spec)


def _pallas(q, k, v, spec: MaskSpec, scale: float, logit_softcap: float | None):
    return flash_attention(q, k, v, spec, scale=scale, logit_softcap=logit_softcap)


def _local_attention(q, k, v, spec: MaskSpec, *, impl: str, scale: float, logit_softcap: float | None):
    if impl == "pallas":
        return _pallas(q, k, v, spec, scale, logit_softcap)
    if impl == "blockwise":
        return blockwise_attention(q, k, v, spec, scale=scale, logit_softcap=logit_softcap)
    return _xla_attention(q, k, v, spec, scale, logit_softcap)
