"""XLA prologue of the flash kernels: per-token key intervals and the per-block visit schedule.

`MaskSpec` visibility (see `kernels.mask.dense_mask`) is rewritten per query token as an interval of key
*positions* plus an optional segment test:

    visible(t, s)  <=>  q_lo[t] <= kv_pos[s] <= q_hi[t]  and  q_seg[t] == kv_seg[s]

  * `q_hi = q_pos` (causal), `max(q_pos, prefix_len - 1)` for a query inside the bidirectional prefix (causal and
    "both inside the prefix" is exactly "key position <= prefix_len - 1" for such a query), int32 max if not causal;
  * `q_lo = max(q_pos - window + 1, 0)` and `q_hi <= q_pos + window - 1` (window `|q - kv| < window`: for causal
    pairs Hugging Face's `q - kv < window`, symmetric inside a bidirectional prefix), else `q_lo = 0`;
  * padding: a query with position < 0 gets the empty interval `[0, -1]`; a key with position < 0 lies below every
    `q_lo >= 0`.
The kernels compare three small int32 vectors per tile instead of reading a mask, and the same intervals give a
conservative block test: query block `i` may see key block `j` only if the hull `[min q_lo, max q_hi]` over its
real queries meets `[min kv_pos, max kv_pos]` over the block's real keys (and the segment-id ranges meet). Blocks
that fail the test are never loaded; the visible ones are compacted into per-block index lists (`schedule`), like
splash attention's `data_next`, so a loop (GPU) or a grid axis (TPU) walks only those. A block pair is *full* when
every query and key is real, `max q_lo <= min kv_pos`, `max kv_pos <= min q_hi` and all segment ids are equal: then
the kernels skip the mask arithmetic for that tile (in causal-like masks only the diagonal tiles are partial).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..mask import MaskSpec, pad_spec

INT_MAX = jnp.iinfo(jnp.int32).max
INT_MIN = jnp.iinfo(jnp.int32).min


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenBounds:
    q_lo: jax.Array  # [batch, q_len] int32
    q_hi: jax.Array  # [batch, q_len] int32; q_lo > q_hi marks a query that sees nothing
    kv_pos: jax.Array  # [batch, kv_len] int32; -1 marks a key no query sees
    q_seg: jax.Array | None = None  # [batch, q_len] int32
    kv_seg: jax.Array | None = None  # [batch, kv_len] int32

    @property
    def has_segments(self) -> bool:
        return self.q_seg is not None


def token_bounds(spec: MaskSpec, q_len: int, kv_len: int) -> TokenBounds:
    """Intervals for `spec`, padded with invisible tokens to `q_len`, `kv_len`."""
    spec = pad_spec(spec, q_len, kv_len)
    q_pos = spec.q_positions.astype(jnp.int32)
    kv_pos = spec.kv_positions.astype(jnp.int32)
    q_ok = q_pos >= 0
    if spec.causal:
        q_hi = q_pos
        if spec.prefix_len is not None:
            p = spec.prefix_len.astype(jnp.int32)[:, None]
            q_hi = jnp.where(q_pos < p, jnp.maximum(q_pos, p - 1), q_pos)
    else:
        q_hi = jnp.full_like(q_pos, INT_MAX)
    q_lo = jnp.zeros_like(q_pos)
    if spec.window is not None:
        # |q - kv| < window  <=>  q - window + 1 <= kv <= q + window - 1 (no int32 overflow: q >= -1, window >= 1,
        # and the upper bound is clamped for "no window" = int32 max).
        window = jnp.asarray(spec.window, jnp.int32)
        q_lo = jnp.maximum(q_pos - window + 1, 0)
        q_hi = jnp.minimum(q_hi, q_pos + jnp.minimum(window - 1, INT_MAX - jnp.maximum(q_pos, 0)))
    q_lo = jnp.where(q_ok, q_lo, 0)
    q_hi = jnp.where(q_ok, q_hi, -1)
    kv_pos = jnp.where(kv_pos >= 0, kv_pos, -1)
    q_seg = kv_seg = None
    if (spec.q_segment_ids is None) != (spec.kv_segment_ids is None):
        raise ValueError("MaskSpec needs both q_segment_ids and kv_segment_ids, or neither")
    if spec.q_segment_ids is not None:
        q_seg = spec.q_segment_ids.astype(jnp.int32)
        kv_seg = spec.kv_segment_ids.astype(jnp.int32)
    return TokenBounds(q_lo=q_lo, q_hi=q_hi, kv_pos=kv_pos, q_seg=q_seg, kv_seg=kv_seg)


def _block_min_max(x: jax.Array, valid: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
    b, n = x.shape
    x = x.reshape(b, n // block, block)
    valid = valid.reshape(b, n // block, block)
    return jnp.where(valid, x, INT_MAX).min(-1), jnp.where(valid, x, INT_MIN).max(-1)


SKIP, PARTIAL, FULL = 0, 1, 2


def block_states(bounds: TokenBounds, block_q: int, block_k: int) -> jax.Array:
    """`[batch, q_blocks, kv_blocks]` int32: SKIP (provably fully masked), PARTIAL (needs the mask), FULL."""
    q_ok = bounds.q_lo <= bounds.q_hi
    kv_ok = bounds.kv_pos >= 0
    lo_min, lo_max = _block_min_max(bounds.q_lo, q_ok, block_q)
    hi_min, hi_max = _block_min_max(bounds.q_hi, q_ok, block_q)
    kmin, kmax = _block_min_max(bounds.kv_pos, kv_ok, block_k)
    q_all = q_ok.reshape(q_ok.shape[0], -1, block_q).all(-1)[:, :, None]
    kv_all = kv_ok.reshape(kv_ok.shape[0], -1, block_k).all(-1)[:, None, :]
    lo_min, lo_max, hi_min, hi_max = (x[:, :, None] for x in (lo_min, lo_max, hi_min, hi_max))
    kmin, kmax = kmin[:, None, :], kmax[:, None, :]
    # Empty blocks get min = INT_MAX / max = INT_MIN, so the overlap test fails for them.
    visit = jnp.maximum(lo_min, kmin) <= jnp.minimum(hi_max, kmax)
    full = q_all & kv_all & (lo_max <= kmin) & (kmax <= hi_min)
    if bounds.has_segments:
        qs_min, qs_max = (x[:, :, None] for x in _block_min_max(bounds.q_seg, q_ok, block_q))
        ks_min, ks_max = (x[:, None, :] for x in _block_min_max(bounds.kv_seg, kv_ok, block_k))
        visit &= jnp.maximum(qs_min, ks_min) <= jnp.minimum(qs_max, ks_max)
        full &= (qs_min == qs_max) & (ks_min == ks_max) & (qs_min == ks_min)
    return jnp.where(visit, jnp.where(full, FULL, PARTIAL), SKIP).astype(jnp.int32)


def schedule(states: jax.Array) -> jax.Array:
    """Compact `states [batch, outer, inner]` into `[batch, outer, 1 + inner]` int32.

    Entry 0 is the number `n` of visited (non-SKIP) inner blocks; entries `1 .. n` encode them in increasing order as
    `2 * index + needs_mask` (needs_mask = 1 for PARTIAL); later entries repeat the last visited entry (0 if none), so
    a TPU index map that reads past `n` keeps pointing at the block already in VMEM and issues no DMA.
    """
    inner = states.shape[-1]
    visit = states != SKIP
    count = visit.sum(-1, dtype=jnp.int32)
    order = jnp.argsort(jnp.logical_not(visit).astype(jnp.int32), axis=-1, stable=True).astype(jnp.int32)
    entry = 2 * order + (jnp.take_along_axis(states, order, axis=-1) == PARTIAL).astype(jnp.int32)
    last = jnp.take_along_axis(entry, jnp.maximum(count - 1, 0)[..., None], axis=-1)
    last = jnp.where(count[..., None] > 0, last, 0)
    entry = jnp.where(jnp.arange(inner, dtype=jnp.int32) < count[..., None], entry, last)
    return jnp.concatenate([count[..., None], entry], axis=-1)


def block_index(entry):
    """Block index of a schedule entry (works on traced int32 scalars inside kernels and index maps)."""
    return jax.lax.shift_right_logical(entry, 1)


def needs_mask(entry):
    return (entry & 1) == 1
