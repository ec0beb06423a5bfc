"""Flash attention kernels for TPU (Mosaic): forward, dQ and dK/dV with scalar-prefetched block schedules.

Layout: heads-major `[batch, heads, seq, head_dim]` (one XLA transpose each way), because Mosaic tiles the last two
dimensions of a block and needs them to be `(seq block, head_dim)`. The key-block loop is the innermost grid axis
("arbitrary"), with the running max / sum / accumulator in VMEM scratch, as in JAX's splash attention: the schedule
(`schedule.schedule`) is scalar-prefetched into SMEM and read by the K/V index maps, so grid step `t` fetches the
`t`-th *visible* block; steps past the visible count repeat the last index (no DMA) and skip compute (`pl.when`);
tiles the schedule marks full skip the mask arithmetic (`lax.cond`).
Per-token metadata follows splash's lane/sublane broadcasts so that no in-kernel transpose is needed: query-side
vectors `[.., seq, 128]` (queries in sublanes), key-side `[.., 8, seq]` (keys in lanes); the dK/dV kernel computes the
transposed scores `k @ q.T` and uses the opposite broadcasts. Block sizes must be multiples of 128.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from .schedule import TokenBounds, block_index, needs_mask
from .tile_math import M_FLOOR, NN, NT, apply_mask, cap, finish_softmax, uncap

LANES, SUBLANES = 128, 8


def validate(block_q: int, block_k: int, head_dim: int) -> None:
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if b % LANES:
            raise ValueError(f"TPU flash attention needs {name} a multiple of {LANES}, got {b}")
    del head_dim


def _params(interpret: bool, semantics):
    return None if interpret else pltpu.CompilerParams(dimension_semantics=semantics)


def _lane_tile(x, n: int):
    """`[rows, 128]` lane-broadcast vector -> `[rows, n]`."""
    reps = pl.cdiv(n, LANES)
    x = jnp.tile(x, (1, reps)) if reps > 1 else x
    return x if x.shape[1] == n else x[:, :n]


def _visible_q_rows(qm_ref, km_ref, block_k: int):
    """`[bq, bk]` visibility from lane-broadcast query metadata `[n, bq, 128]` and key rows `[m, 8, bk]`."""
    kv_pos = km_ref[0, :1, :]
    vis = (kv_pos >= _lane_tile(qm_ref[0], block_k)) & (kv_pos <= _lane_tile(qm_ref[1], block_k))
    if qm_ref.shape[0] > 2:
        vis &= _lane_tile(qm_ref[2], block_k) == km_ref[1, :1, :]
    return vis


def _visible_kv_rows(qm_ref, km_ref, block_q: int):
    """Transposed `[bk, bq]` visibility from lane-broadcast key metadata `[m, bk, 128]` and query rows `[n, 8, bq]`."""
    kv_pos = _lane_tile(km_ref[0], block_q)
    vis = (kv_pos >= qm_ref[0, :1, :]) & (kv_pos <= qm_ref[1, :1, :])
    if qm_ref.shape[0] > 2:
        vis &= _lane_tile(km_ref[1], block_q) == qm_ref[2, :1, :]
    return vis


def _lanes(x):
    """`[batch, seq]` -> `[batch, seq, 128]`: one value per sublane row."""
    return lax.broadcast_in_dim(x, (*x.shape, LANES), (0, 1))


def _rows(x):
    """`[batch, seq]` -> `[batch, 8, seq]`: one value per lane column."""
    return lax.broadcast_in_dim(x, (x.shape[0], SUBLANES, x.shape[1]), (0, 2))


def _stack_meta(bounds: TokenBounds):
    q = [bounds.q_lo, bounds.q_hi] + ([bounds.q_seg] if bounds.has_segments else [])
    kv = [bounds.kv_pos] + ([bounds.kv_seg] if bounds.has_segments else [])
    return jnp.stack(q, 1), jnp.stack(kv, 1)  # [b, 2|3, q_len], [b, 1|2, kv_len]


def _stack(fn, x):  # apply a [batch, seq] broadcast to a [batch, n, seq] stack
    return jax.vmap(fn, in_axes=1, out_axes=1)(x)


# ------------------------------------------------------------------------------------------------ forward


def _fwd_kernel(
    sched_ref,
    qm_ref,
    km_ref,
    q_ref,
    k_ref,
    v_ref,
    o_ref,
    lse_ref,
    m_sc,
    l_sc,
    acc_sc,
    *,
    scale: float,
    softcap: float | None,
    steps: int,
):
    b, i, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(t == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, M_FLOOR, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when(t < sched_ref[b, i, 0])
    def _step():
        q, k = q_ref[...], k_ref[...]
        block_k = k.shape[0]
        s, _ = cap(lax.dot_general(q, k, NT, preferred_element_type=jnp.float32) * scale, softcap)  # [bq, bk]
        s = apply_mask(s, needs_mask(sched_ref[b, i, t + 1]), lambda: _visible_q_rows(qm_ref, km_ref, block_k))
        m_prev = m_sc[...]
        m_next = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))  # [bq, 128]
        p = jnp.exp(s - _lane_tile(m_next, block_k))
        alpha = jnp.exp(m_prev - m_next)
        l_sc[...] = alpha * l_sc[...] + p.sum(axis=-1, keepdims=True)
        m_sc[...] = m_next
        v = v_ref[...]
        pv = lax.dot_general(p.astype(v.dtype), v, NN, preferred_element_type=jnp.float32)
        acc_sc[...] = acc_sc[...] * _lane_tile(alpha, acc_sc.shape[1]) + pv

    @pl.when(t == steps - 1)
    def _finish():
        inv, lse = finish_softmax(m_sc[...], l_sc[...])
        o_ref[...] = (acc_sc[...] * _lane_tile(inv, acc_sc.shape[1])).astype(o_ref.dtype)
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
):
    """`(out [b, q_len, h, d], lse [b, h, q_len] f32)`; lengths are multiples of the blocks (caller pads)."""
    batch, q_len, heads, d = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    steps = kv_len // block_k
    qm, km = _stack_meta(bounds)
    qm, km = _stack(_lanes, qm), _stack(_rows, km)
    qt, kt, vt = (x.transpose(0, 2, 1, 3) for x in (q, k, v))

    def kv_map(b, h, i, t, sched_ref):
        return b, lax.div(h, groups), block_index(sched_ref[b, i, t + 1]), 0

    in_specs = [
        pl.BlockSpec((None, qm.shape[1], block_q, LANES), lambda b, h, i, t, s: (b, 0, i, 0)),
        pl.BlockSpec(
            (None, km.shape[1], SUBLANES, block_k), lambda b, h, i, t, s: (b, 0, 0, block_index(s[b, i, t + 1]))
        ),
        pl.BlockSpec((None, None, block_q, d), lambda b, h, i, t, s: (b, h, i, 0)),
        pl.BlockSpec((None, None, block_k, d), kv_map),
        pl.BlockSpec((None, None, block_k, d), kv_map),
    ]
    out_specs = [
        pl.BlockSpec((None, None, block_q, d), lambda b, h, i, t, s: (b, h, i, 0)),
        pl.BlockSpec((None, None, block_q, LANES), lambda b, h, i, t, s: (b, h, i, 0)),
    ]
    o, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, scale=scale, softcap=softcap, steps=steps),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(batch, heads, q_len // block_q, steps),
            in_specs=in_specs,
            out_specs=out_specs,
            scratch_shapes=[
                pltpu.VMEM((block_q, LANES), jnp.float32),
                pltpu.VMEM((block_q, LANES), jnp.float32),
                pltpu.VMEM((block_q, d), jnp.float32),
            ],
        ),
        out_shape=[
            jax.ShapeDtypeStruct(qt.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, heads, q_len, LANES), jnp.float32),
        ],
        compiler_params=_params(interpret, ("parallel", "parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="flash_fwd_tpu",
    )(sched, qm, km, qt, kt, vt)
    return o.transpose(0, 2, 1, 3), lse[..., 0]


# ------------------------------------------------------------------------------------------------ backward


def _dq_kernel(
    sched_ref,
    qm_ref,
    km_ref,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    dq_ref,
    dq_sc,
    *,
    scale: float,
    softcap: float | None,
    steps: int,
):
    b, i, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(t == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    @pl.when(t < sched_ref[b, i, 0])
    def _step():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        block_k = k.shape[0]
        s, t_cap = cap(lax.dot_general(q, k, NT, preferred_element_type=jnp.float32) * scale, softcap)
        s = apply_mask(s, needs_mask(sched_ref[b, i, t + 1]), lambda: _visible_q_rows(qm_ref, km_ref, block_k))
        p = jnp.exp(s - _lane_tile(lse_ref[...], block_k))
        dp = lax.dot_general(do, v, NT, preferred_element_type=jnp.float32)
        ds = uncap(p * (dp - _lane_tile(delta_ref[...], block_k)), t_cap)
        dq_sc[...] += lax.dot_general(ds.astype(k.dtype), k, NN, preferred_element_type=jnp.float32)

    @pl.when(t == steps - 1)
    def _finish():
        dq_ref[...] = (dq_sc[...] * scale).astype(dq_ref.dtype)


def _dkv_kernel(
    sched_ref,
    qm_ref,
    km_ref,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    dk_ref,
    dv_ref,
    dk_sc,
    dv_sc,
    *,
    scale: float,
    softcap: float | None,
    groups: int,
    steps: int,
):
    b, j, g, t = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((g == 0) & (t == 0))
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    @pl.when(t < sched_ref[b, j, 0])
    def _step():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        block_q = q.shape[0]
        s_t, t_cap = cap(lax.dot_general(k, q, NT, preferred_element_type=jnp.float32) * scale, softcap)  # [bk, bq]
        s_t = apply_mask(s_t, needs_mask(sched_ref[b, j, t + 1]), lambda: _visible_kv_rows(qm_ref, km_ref, block_q))
        p_t = jnp.exp(s_t - lse_ref[:1, :])
        dv_sc[...] += lax.dot_general(p_t.astype(do.dtype), do, NN, preferred_element_type=jnp.float32)
        dp_t = lax.dot_general(v, do, NT, preferred_element_type=jnp.float32)
        ds_t = uncap(p_t * (dp_t - delta_ref[:1, :]), t_cap)
        dk_sc[...] += lax.dot_general(ds_t.astype(q.dtype), q, NN, preferred_element_type=jnp.float32)

    @pl.when((g == groups - 1) & (t == steps - 1))
    def _finish():
        dk_ref[...] = (dk_sc[...] * scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


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
):
    """`(dq, dk, dv)` for `forward`'s output `out` and its `lse`; `sched_q` is query-major, `sched_kv` key-major."""
    batch, q_len, heads, d = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    nq, nk = q_len // block_q, kv_len // block_k
    delta = jnp.einsum("bshd,bshd->bhs", out.astype(jnp.float32), do.astype(jnp.float32))
    qm, km = _stack_meta(bounds)
    qt, kt, vt, dot_ = (x.transpose(0, 2, 1, 3) for x in (q, k, v, do))

    # dQ: same grid and schedule walk as the forward.
    def kv_map(b, h, i, t, sched_ref):
        return b, lax.div(h, groups), block_index(sched_ref[b, i, t + 1]), 0

    def q_map(b, h, i, t, s):
        return b, h, i, 0

    lanes_q = lambda x: lax.broadcast_in_dim(x, (*x.shape, LANES), (0, 1, 2))  # [b, h, q] -> [b, h, q, 128]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, softcap=softcap, steps=nk),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(batch, heads, nq, nk),
            in_specs=[
                pl.BlockSpec((None, qm.shape[1], block_q, LANES), lambda b, h, i, t, s: (b, 0, i, 0)),
                pl.BlockSpec(
                    (None, km.shape[1], SUBLANES, block_k), lambda b, h, i, t, s: (b, 0, 0, block_index(s[b, i, t + 1]))
                ),
                pl.BlockSpec((None, None, block_q, d), q_map),
                pl.BlockSpec((None, None, block_k, d), kv_map),
                pl.BlockSpec((None, None, block_k, d), kv_map),
                pl.BlockSpec((None, None, block_q, d), q_map),
                pl.BlockSpec((None, None, block_q, LANES), q_map),
                pl.BlockSpec((None, None, block_q, LANES), q_map),
            ],
            out_specs=pl.BlockSpec((None, None, block_q, d), q_map),
            scratch_shapes=[pltpu.VMEM((block_q, d), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(qt.shape, q.dtype),
        compiler_params=_params(interpret, ("parallel", "parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="flash_bwd_dq_tpu",
    )(sched_q, _stack(_lanes, qm), _stack(_rows, km), qt, kt, vt, dot_, lanes_q(lse), lanes_q(delta))

    # dK/dV: one program per (kv block, kv head); the grid walks its query heads and then its visible query blocks.
    def qh_map(b, kh, j, g, t, sched_ref):
        return b, kh * groups + g, block_index(sched_ref[b, j, t + 1]), 0

    def row_map(b, kh, j, g, t, sched_ref):
        return b, kh * groups + g, 0, block_index(sched_ref[b, j, t + 1])

    def kv_own(b, kh, j, g, t, s):
        return b, kh, j, 0

    rows_q = lambda x: lax.broadcast_in_dim(x, (*x.shape[:2], SUBLANES, x.shape[2]), (0, 1, 3))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, scale=scale, softcap=softcap, groups=groups, steps=nq),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(batch, kv_heads, nk, groups, nq),
            in_specs=[
                pl.BlockSpec(
                    (None, qm.shape[1], SUBLANES, block_q),
                    lambda b, kh, j, g, t, s: (b, 0, 0, block_index(s[b, j, t + 1])),
                ),
                pl.BlockSpec((None, km.shape[1], block_k, LANES), lambda b, kh, j, g, t, s: (b, 0, j, 0)),
                pl.BlockSpec((None, None, block_q, d), qh_map),
                pl.BlockSpec((None, None, block_k, d), kv_own),
                pl.BlockSpec((None, None, block_k, d), kv_own),
                pl.BlockSpec((None, None, block_q, d), qh_map),
                pl.BlockSpec((None, None, SUBLANES, block_q), row_map),
                pl.BlockSpec((None, None, SUBLANES, block_q), row_map),
            ],
            out_specs=[pl.BlockSpec((None, None, block_k, d), kv_own)] * 2,
            scratch_shapes=[pltpu.VMEM((block_k, d), jnp.float32), pltpu.VMEM((block_k, d), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(kt.shape, k.dtype), jax.ShapeDtypeStruct(vt.shape, v.dtype)],
        compiler_params=_params(interpret, ("parallel", "parallel", "parallel", "arbitrary", "arbitrary")),
        interpret=interpret,
        name="flash_bwd_dkv_tpu",
    )(sched_kv, _stack(_rows, qm), _stack(_lanes, km), qt, kt, vt, dot_, rows_q(lse), rows_q(delta))
    return dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)
