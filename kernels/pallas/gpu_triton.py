"""Flash attention kernels in the Triton style: forward, dQ and dK/dV (GPU via Triton; CPU via `interpret=True`).

Layout: the caller's `[batch, seq, heads, head_dim]`, untouched (Triton loads strided tiles, so no transposes).
Grid: one program per (query block, head, batch) for the forward and dQ, per (key block, kv head, batch) for dK/dV;
block index fastest so neighbouring programs share K/V (or Q) tiles in L2. Each program holds its whole K/V (or
Q/dO) sequence as a ref and loops with `lax.fori_loop` over the *visible* blocks only, read from the compacted
schedule (`schedule.schedule`): entry 0 is the trip count, entries 1.. the block indices with a "needs mask" bit;
tiles whose every entry is visible skip the mask arithmetic (`lax.cond`).
GQA: the forward and dQ map query head `h` to kv head `h // groups`; dK/dV programs own one kv head and loop over
its `groups` query heads, so repeated K/V is never materialized and dK/dV need no reduction afterwards.
Masked logits are -inf and the running max starts at a finite floor (`tile_math`), so a row that has seen nothing
keeps a zero denominator: it outputs 0, gets `lse = 0`, and all its probabilities (hence gradients) are exactly 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from .schedule import TokenBounds, block_index, needs_mask
from .tile_math import M_FLOOR, NT, TN, apply_mask, cap, finish_softmax, uncap


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def validate(block_q: int, block_k: int, head_dim: int) -> None:
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if not _is_pow2(b) or b < 16:
            raise ValueError(f"Triton flash attention needs {name} a power of two >= 16, got {b}")
    del head_dim  # padded to a power of two by the wrappers


def _params(interpret: bool, num_warps: int, num_stages: int):
    return None if interpret else pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _visible(q_lo, q_hi, kv_pos, q_seg, kv_seg):
    """`[bq, 1]` query intervals against `[1, bk]` key positions (and segment ids): `[bq, bk]` bool."""
    vis = (kv_pos >= q_lo) & (kv_pos <= q_hi)
    if q_seg is not None:
        vis &= q_seg == kv_seg
    return vis


def _split_meta(refs, has_seg: bool):
    """(q_lo, q_hi, kv_pos, q_seg | None, kv_seg | None), rest."""
    if has_seg:
        return tuple(refs[:5]), refs[5:]
    return (*refs[:3], None, None), refs[3:]


def _meta_inputs(bounds: TokenBounds):
    arrays = [bounds.q_lo, bounds.q_hi, bounds.kv_pos]
    if bounds.has_segments:
        arrays += [bounds.q_seg, bounds.kv_seg]
    return arrays


def _meta_specs(has_seg: bool, q_spec: pl.BlockSpec, kv_spec: pl.BlockSpec):
    return [q_spec, q_spec, kv_spec] + ([q_spec, kv_spec] if has_seg else [])


def _pad_head_dim(x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    d_pad = max(16, pl.next_power_of_2(d))
    return x if d_pad == d else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, d_pad - d)])


# ------------------------------------------------------------------------------------------------ forward


def _fwd_kernel(sched_ref, *refs, scale: float, softcap: float | None, block_k: int, has_seg: bool):
    (q_lo_ref, q_hi_ref, kv_pos_ref, q_seg_ref, kv_seg_ref), (q_ref, k_ref, v_ref, o_ref, lse_ref) = _split_meta(
        refs, has_seg
    )
    q = q_ref[...]
    block_q, head_dim = q.shape
    q_lo, q_hi = q_lo_ref[...][:, None], q_hi_ref[...][:, None]
    q_seg = q_seg_ref[...][:, None] if has_seg else None

    def body(t, carry):
        acc, m, denom = carry
        entry = sched_ref[t + 1]
        ks = pl.ds(pl.multiple_of(block_index(entry) * block_k, block_k), block_k)
        s, _ = cap(lax.dot_general(q, k_ref[ks, :], NT, preferred_element_type=jnp.float32) * scale, softcap)
        s = apply_mask(
            s,
            needs_mask(entry),
            lambda: _visible(q_lo, q_hi, kv_pos_ref[ks][None, :], q_seg, kv_seg_ref[ks][None, :] if has_seg else None),
        )
        m_next = jnp.maximum(m, s.max(axis=-1))
        p = jnp.exp(s - m_next[:, None])
        alpha = jnp.exp(m - m_next)
        v = v_ref[ks, :]
        acc = acc * alpha[:, None] + lax.dot_general(
            p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        return acc, m_next, alpha * denom + p.sum(axis=-1)

    init = (
        jnp.zeros((block_q, head_dim), jnp.float32),
        jnp.full((block_q,), M_FLOOR, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    acc, m, denom = lax.fori_loop(0, sched_ref[0], body, init)
    inv, lse = finish_softmax(m, denom)
    o_ref[...] = (acc * inv[:, None]).astype(o_ref.dtype)
    lse_ref[...] = lse


def forward(
    q,
    k,
    v,
    bounds: TokenBounds,
    sched,
    *,
    scale: float,
    softcap: float | None,
    block_q: int,
    block_k: int,
    interpret: bool,
    num_warps: int | None = None,
    num_stages: int = 2,
):
    """`(out [b, q_len, h, d], lse [b, h, q_len] f32)`; lengths are multiples of the blocks (caller pads)."""
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    q, k, v = _pad_head_dim(q), _pad_head_dim(k), _pad_head_dim(v)
    d = q.shape[-1]
    has_seg = bounds.has_segments
    grid = (q_len // block_q, heads, batch)
    in_specs = [
        pl.BlockSpec((None, None, sched.shape[-1]), lambda i, h, b: (b, i, 0)),
        *_meta_specs(
            has_seg,
            pl.BlockSpec((None, block_q), lambda i, h, b: (b, i)),
            pl.BlockSpec((None, kv_len), lambda i, h, b: (b, 0)),
        ),
        pl.BlockSpec((None, block_q, None, d), lambda i, h, b: (b, i, h, 0)),
        pl.BlockSpec((None, kv_len, None, d), lambda i, h, b: (b, 0, lax.div(h, groups), 0)),
        pl.BlockSpec((None, kv_len, None, d), lambda i, h, b: (b, 0, lax.div(h, groups), 0)),
    ]
    out_specs = [
        pl.BlockSpec((None, block_q, None, d), lambda i, h, b: (b, i, h, 0)),
        pl.BlockSpec((None, None, block_q), lambda i, h, b: (b, h, i)),
    ]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, heads, q_len), jnp.float32)]
    o, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, scale=scale, softcap=softcap, block_k=block_k, has_seg=has_seg),
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_params(interpret, num_warps or (4 if d <= 64 else 8), num_stages),
        interpret=interpret,
        name="flash_fwd",
    )(sched, *_meta_inputs(bounds), q, k, v)
    return o[..., :head_dim], lse


# ------------------------------------------------------------------------------------------------ backward


def _dq_kernel(sched_ref, *refs, scale: float, softcap: float | None, block_k: int, has_seg: bool):
    (q_lo_ref, q_hi_ref, kv_pos_ref, q_seg_ref, kv_seg_ref), rest = _split_meta(refs, has_seg)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref = rest
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
    q_lo, q_hi = q_lo_ref[...][:, None], q_hi_ref[...][:, None]
    q_seg = q_seg_ref[...][:, None] if has_seg else None

    def body(t, dq):
        entry = sched_ref[t + 1]
        ks = pl.ds(pl.multiple_of(block_index(entry) * block_k, block_k), block_k)
        k, v = k_ref[ks, :], v_ref[ks, :]
        s, t_cap = cap(lax.dot_general(q, k, NT, preferred_element_type=jnp.float32) * scale, softcap)
        s = apply_mask(
            s,
            needs_mask(entry),
            lambda: _visible(q_lo, q_hi, kv_pos_ref[ks][None, :], q_seg, kv_seg_ref[ks][None, :] if has_seg else None),
        )
        p = jnp.exp(s - lse)
        dp = lax.dot_general(do, v, NT, preferred_element_type=jnp.float32)
        ds = uncap(p * (dp - delta), t_cap)
        return dq + lax.dot_general(ds.astype(k.dtype), k, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    dq = lax.fori_loop(0, sched_ref[0], body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _dkv_kernel(sched_ref, *refs, scale: float, softcap: float | None, block_q: int, groups: int, has_seg: bool):
    (q_lo_ref, q_hi_ref, kv_pos_ref, q_seg_ref, kv_seg_ref), rest = _split_meta(refs, has_seg)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref = rest
    k, v = k_ref[...], v_ref[...]
    kv_pos = kv_pos_ref[...][None, :]
    kv_seg = kv_seg_ref[...][None, :] if has_seg else None
    count = sched_ref[0]

    def body(t, carry, g):
        dk, dv = carry
        entry = sched_ref[t + 1]
        qs = pl.ds(pl.multiple_of(block_index(entry) * block_q, block_q), block_q)
        q, do = q_ref[qs, g, :], do_ref[qs, g, :]
        s, t_cap = cap(lax.dot_general(q, k, NT, preferred_element_type=jnp.float32) * scale, softcap)
        s = apply_mask(
            s,
            needs_mask(entry),
            lambda: _visible(
                q_lo_ref[qs][:, None],
                q_hi_ref[qs][:, None],
                kv_pos,
                q_seg_ref[qs][:, None] if has_seg else None,
                kv_seg,
            ),
        )
        p = jnp.exp(s - lse_ref[g, qs][:, None])
        dv = dv + lax.dot_general(p.astype(do.dtype), do, TN, preferred_element_type=jnp.float32)
        dp = lax.dot_general(do, v, NT, preferred_element_type=jnp.float32)
        ds = uncap(p * (dp - delta_ref[g, qs][:, None]), t_cap)
        dk = dk + lax.dot_general(ds.astype(q.dtype), q, TN, preferred_element_type=jnp.float32)
        return dk, dv

    def per_head(g, carry):
        return lax.fori_loop(0, count, functools.partial(body, g=g), carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, groups, per_head, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def backward(
    q,
    k,
    v,
    out,
    lse,
    do,
    bounds: TokenBounds,
    sched_q,
    sched_kv,
    *,
    scale: float,
    softcap: float | None,
    block_q: int,
    block_k: int,
    interpret: bool,
    num_warps: int | None = None,
    num_stages: int = 2,
):
    """`(dq, dk, dv)` for `forward`'s output `out` and its `lse`; `sched_q` is query-major, `sched_kv` key-major."""
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    delta = jnp.einsum("bshd,bshd->bhs", out.astype(jnp.float32), do.astype(jnp.float32))
    q, k, v, do = _pad_head_dim(q), _pad_head_dim(k), _pad_head_dim(v), _pad_head_dim(do)
    d = q.shape[-1]
    has_seg = bounds.has_segments
    warps = num_warps or (4 if block_q * block_k <= 64 * 64 else 8)
    meta = _meta_inputs(bounds)

    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, softcap=softcap, block_k=block_k, has_seg=has_seg),
        grid=(q_len // block_q, heads, batch),
        in_specs=[
            pl.BlockSpec((None, None, sched_q.shape[-1]), lambda i, h, b: (b, i, 0)),
            *_meta_specs(
                has_seg,
                pl.BlockSpec((None, block_q), lambda i, h, b: (b, i)),
                pl.BlockSpec((None, kv_len), lambda i, h, b: (b, 0)),
            ),
            pl.BlockSpec((None, block_q, None, d), lambda i, h, b: (b, i, h, 0)),
            pl.BlockSpec((None, kv_len, None, d), lambda i, h, b: (b, 0, lax.div(h, groups), 0)),
            pl.BlockSpec((None, kv_len, None, d), lambda i, h, b: (b, 0, lax.div(h, groups), 0)),
            pl.BlockSpec((None, block_q, None, d), lambda i, h, b: (b, i, h, 0)),
            pl.BlockSpec((None, None, block_q), lambda i, h, b: (b, h, i)),
            pl.BlockSpec((None, None, block_q), lambda i, h, b: (b, h, i)),
        ],
        out_specs=pl.BlockSpec((None, block_q, None, d), lambda i, h, b: (b, i, h, 0)),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(interpret, warps, num_stages),
        interpret=interpret,
        name="flash_bwd_dq",
    )(sched_q, *meta, q, k, v, do, lse, delta)

    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, scale=scale, softcap=softcap, block_q=block_q, groups=groups, has_seg=has_seg),
        grid=(kv_len // block_k, kv_heads, batch),
        in_specs=[
            pl.BlockSpec((None, None, sched_kv.shape[-1]), lambda j, kh, b: (b, j, 0)),
            *_meta_specs(
                has_seg,
                pl.BlockSpec((None, q_len), lambda j, kh, b: (b, 0)),
                pl.BlockSpec((None, block_k), lambda j, kh, b: (b, j)),
            ),
            pl.BlockSpec((None, q_len, groups, d), lambda j, kh, b: (b, 0, kh, 0)),
            pl.BlockSpec((None, block_k, None, d), lambda j, kh, b: (b, j, kh, 0)),
            pl.BlockSpec((None, block_k, None, d), lambda j, kh, b: (b, j, kh, 0)),
            pl.BlockSpec((None, q_len, groups, d), lambda j, kh, b: (b, 0, kh, 0)),
            pl.BlockSpec((None, groups, q_len), lambda j, kh, b: (b, kh, 0)),
            pl.BlockSpec((None, groups, q_len), lambda j, kh, b: (b, kh, 0)),
        ],
        out_specs=[pl.BlockSpec((None, block_k, None, d), lambda j, kh, b: (b, j, kh, 0))] * 2,
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_params(interpret, warps, num_stages),
        interpret=interpret,
        name="flash_bwd_dkv",
    )(sched_kv, *meta, q, k, v, do, lse, delta)
    return dq[..., :head_dim], dk[..., :head_dim], dv[..., :head_dim]
