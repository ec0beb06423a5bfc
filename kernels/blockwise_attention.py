"""Memory-efficient attention in plain XLA: key blocks with an online softmax, and a hand-written backward.

For long sequences where the Pallas kernels are not available (CPU, an export without Triton, a GPU whose Triton
cannot lower them). The dense path (`kernels.attention._xla_attention`) holds `[heads, q_len, kv_len]` scores, which
is 86 GiB per device for Olmo-3-7B at 32k tokens; this one holds `[heads, q_len, block]` at a time:
  * forward: `lax.scan` over key blocks carrying the running max, normalizer and output (online softmax); it keeps
    only the output and the log-sum-exp for the backward (O(q_len) memory);
  * backward (`jax.custom_vjp`, the flash-attention recurrence): scans the key blocks again, recomputing each block's
    probabilities from the saved log-sum-exp; dQ is a carry, dK/dV come out per block. Autodiff of the forward scan
    would save every block's probabilities, i.e. the dense scores again.
The mask of each block comes from the same position-based `MaskSpec` as every other implementation, so it is
exact for causal, bidirectional-prefix, window, segment and padding masks; blocks wholly masked still cost their
FLOPs (XLA has no cheap per-block skip), which the Pallas kernels avoid.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from .mask import MaskSpec, dense_mask, pad_spec
from .padding import pad_tokens

DEFAULT_BLOCK = 512
_NEG = jnp.finfo(jnp.float32).min


@dataclasses.dataclass(frozen=True)
class _Static:
    scale: float
    softcap: float | None
    block: int


def _blocks(x: jax.Array | None, block: int) -> jax.Array | None:
    """`[batch, kv_len, ...]` -> `[n_blocks, batch, block, ...]`, the tail padded with zeros (None passes through)."""
    if x is None:
        return None
    n = -(-x.shape[1] // block)
    x = pad_tokens(x, n * block)
    return jnp.moveaxis(x.reshape(x.shape[0], n, block, *x.shape[2:]), 1, 0)


def _kv_blocks(spec: MaskSpec, k, v, block: int):
    """Scan inputs: key/value blocks and the key-side fields of `spec` cut the same way (padding invisible)."""
    spec = pad_spec(spec, spec.q_positions.shape[1], -(-k.shape[1] // block) * block)
    return _blocks(k, block), _blocks(v, block), _blocks(spec.kv_positions, block), _blocks(spec.kv_segment_ids, block)


def _block_mask(spec: MaskSpec, kv_pos: jax.Array, kv_seg: jax.Array | None) -> jax.Array:
    """`[batch, 1, 1, q_len, block]` visibility of one key block (`dense_mask` of the block's keys)."""
    sub = dataclasses.replace(spec, kv_positions=kv_pos, kv_segment_ids=kv_seg)
    return dense_mask(sub)[:, None, None]


def _scores(qg, k_blk, st: _Static):
    """Scaled (and soft-capped) scores `[batch, kv_heads, groups, q_len, block]` and the tanh for the backward."""
    s = jnp.einsum("btkgd,bskd->bkgts", qg, k_blk, preferred_element_type=jnp.float32) * st.scale
    if st.softcap is None:
        return s, None
    t = jnp.tanh(s / st.softcap)
    return t * st.softcap, t


def _group(q, num_kv_heads):
    b, t, h, d = q.shape
    return q.reshape(b, t, num_kv_heads, h // num_kv_heads, d)


def _forward(q, k, v, spec: MaskSpec, st: _Static):
    """Output `[batch, q_len, heads, head_dim]` (q.dtype) and log-sum-exp `[batch, kv_heads, groups, q_len]`."""
    batch, q_len, heads, head_dim = q.shape
    kvh = k.shape[2]
    qg = _group(q, kvh)
    shape = (batch, kvh, heads // kvh, q_len)

    def body(carry, xs):
        m, norm, acc = carry
        k_blk, v_blk, pos, seg = xs
        s, _ = _scores(qg, k_blk, st)
        mask = _block_mask(spec, pos, seg)
        s = jnp.where(mask, s, _NEG)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
        corr = jnp.exp(m - m_new)
        norm = norm * corr + p.sum(-1)
        pv = jnp.einsum("bkgts,bskd->bkgtd", p.astype(v.dtype), v_blk, preferred_element_type=jnp.float32)
        return (m_new, norm, acc * corr[..., None] + pv), None

    init = (jnp.full(shape, _NEG), jnp.zeros(shape), jnp.zeros((*shape, head_dim)))
    (m, norm, acc), _ = jax.lax.scan(body, init, _kv_blocks(spec, k, v, st.block))
    visible = norm > 0  # rows with no visible key give zeros, as the dense path does
    out = jnp.where(visible[..., None], acc / jnp.where(visible, norm, 1.0)[..., None], 0.0)
    lse = jnp.where(visible, m + jnp.log(jnp.where(visible, norm, 1.0)), jnp.inf)  # inf: p = exp(s - inf) = 0
    out = jnp.moveaxis(out, 3, 1).reshape(batch, q_len, heads, head_dim)  # [b, k, g, t, d] -> [b, t, h, d]
    return out.astype(q.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, spec: MaskSpec, st: _Static):
    return _forward(q, k, v, spec, st)[0]


def _attention_fwd(q, k, v, spec: MaskSpec, st: _Static):
    out, lse = _forward(q, k, v, spec, st)
    return out, (q, k, v, spec, out, lse)


def _attention_bwd(st: _Static, res, do):
    q, k, v, spec, out, lse = res
    batch, q_len, heads, head_dim = q.shape
    kv_len, kvh = k.shape[1], k.shape[2]
    qg = _group(q, kvh)
    dog = jnp.moveaxis(_group(do, kvh), 1, 3).astype(jnp.float32)  # [b, k, g, t, d]
    delta = (dog * jnp.moveaxis(_group(out, kvh), 1, 3).astype(jnp.float32)).sum(-1)  # [b, k, g, t]

    def body(dq, xs):
        k_blk, v_blk, pos, seg = xs
        s, t = _scores(qg, k_blk, st)
        mask = _block_mask(spec, pos, seg)
        p = jnp.where(mask, jnp.exp(s - lse[..., None]), 0.0)  # [b, k, g, t, s]
        dv = jnp.einsum("bkgts,bkgtd->bskd", p, dog)
        dp = jnp.einsum("bkgtd,bskd->bkgts", dog, v_blk.astype(jnp.float32))
        ds = p * (dp - delta[..., None])
        if t is not None:
            ds = ds * (1.0 - t * t)
        ds = ds * st.scale
        dq = dq + jnp.einsum("bkgts,bskd->btkgd", ds, k_blk.astype(jnp.float32))
        dk = jnp.einsum("bkgts,btkgd->bskd", ds, qg.astype(jnp.float32))
        return dq, (dk, dv)

    dq0 = jnp.zeros(qg.shape, jnp.float32)
    dq, (dk, dv) = jax.lax.scan(body, dq0, _kv_blocks(spec, k, v, st.block))

    def unblock(x):  # [n, b, block, kvh, d] -> [b, kv_len, kvh, d]
        return jnp.moveaxis(x, 0, 1).reshape(batch, -1, kvh, head_dim)[:, :kv_len]

    return (dq.reshape(q.shape).astype(q.dtype), unblock(dk).astype(k.dtype), unblock(dv).astype(v.dtype), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(
    q: jax.Array,  # [batch, q_len, heads, head_dim]
    k: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    v: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    mask_spec: MaskSpec,
    *,
    scale: float,
    logit_softcap: float | None = None,
    block: int = DEFAULT_BLOCK,
) -> jax.Array:  # [batch, q_len, heads, head_dim], q.dtype
    """Attention with `mask_spec` visibility in O(q_len x block) memory per head, forward and backward."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    block = min(block, k.shape[1])
    st = _Static(scale=float(scale), softcap=None if logit_softcap is None else float(logit_softcap), block=block)
    return _attention(q, k, v, mask_spec, st)
