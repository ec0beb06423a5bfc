"""Blockwise XLA attention (online softmax, hand-written backward) against the dense-mask reference, forward and
backward (the entry point and its `impl="auto"` routing: test_attention.py).

float32: max abs error <= 1e-5 for out, dq, dk, dv. bfloat16: <= 2e-2 x (1 + max |reference|), as for the Pallas
kernels (the two paths round the probabilities before P @ V at different points).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.kernels.attention import _xla_attention
from bitune_jax.kernels.blockwise_attention import blockwise_attention
from bitune_jax.kernels.mask import MaskSpec

F32_TOL = 1e-5
BF16_TOL = 2e-2


def _qkv(seed, batch, q_len, kv_len, heads, kv_heads, head_dim, dtype=jnp.float32):
    kq, kk, kv, kw = jax.random.split(jax.random.PRNGKey(seed), 4)
    make = lambda key, shape: jax.random.normal(key, shape, jnp.float32).astype(dtype)
    q, w = make(kq, (batch, q_len, heads, head_dim)), make(kw, (batch, q_len, heads, head_dim))
    return q, make(kk, (batch, kv_len, kv_heads, head_dim)), make(kv, (batch, kv_len, kv_heads, head_dim)), w


def _positions(batch, length):
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


def _compare(spec, q, k, v, w, *, block, softcap=None):
    scale = q.shape[-1] ** -0.5

    def run(fn):
        def value_and_grads(q, k, v, w, spec):
            out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, spec), q, k, v)
            return (out, *vjp(w))

        return jax.jit(value_and_grads)(q, k, v, w, spec)

    ref = run(lambda q, k, v, s: _xla_attention(q, k, v, s, scale, softcap))
    got = run(lambda q, k, v, s: blockwise_attention(q, k, v, s, scale=scale, logit_softcap=softcap, block=block))
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        r, g = np.asarray(r, np.float32), np.asarray(g, np.float32)
        bound = F32_TOL if q.dtype == jnp.float32 else BF16_TOL * (1.0 + float(np.abs(r).max()))
        err = float(np.abs(r - g).max())
        assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"
    return got


@pytest.mark.parametrize("block", [7, 16, 64])  # a ragged tail block, several blocks, one block
def test_prefix_gqa_padding(block):
    n = 37
    q, k, v, w = _qkv(0, 3, n, n, 6, 2, 32)
    pad = jnp.array([0, 5, 0])[:, None]
    pos = jnp.where(jnp.arange(n) >= pad, jnp.arange(n) - pad, -1).astype(jnp.int32)
    pos = pos.at[2, 30:].set(-1)  # right padding too
    spec = MaskSpec(q_positions=pos, kv_positions=pos, prefix_len=jnp.array([0, 9, 16], jnp.int32))
    _, dq, _, _ = _compare(spec, q, k, v, w, block=block)
    assert not np.asarray(dq)[np.asarray(pos < 0)].any()  # padding queries get no gradient


def test_window_segments_softcap():
    n = 41
    q, k, v, w = _qkv(1, 2, n, n, 4, 4, 16)
    seg = jnp.array([[0] * 10 + [1] * 31, [0] * 30 + [1] * 11], jnp.int32)
    spec = MaskSpec(
        q_positions=_positions(2, n),
        kv_positions=_positions(2, n),
        window=jnp.int32(6),
        q_segment_ids=seg,
        kv_segment_ids=seg,
        prefix_len=jnp.array([4, 12], jnp.int32),
    )
    _compare(spec, q, k, v, w, block=8, softcap=5.0)


def test_decode_over_cache_with_empty_rows():
    """3 queries over a 45-slot cache; the third row sees nothing and must output (and backpropagate) zeros."""
    kv_len = 45
    q, k, v, w = _qkv(2, 3, 3, kv_len, 4, 2, 16)
    used = jnp.array([40, 31, 0])[:, None]
    kv_pos = jnp.where(jnp.arange(kv_len) < used, jnp.arange(kv_len), -1).astype(jnp.int32)
    q_pos = jnp.array([[40, 41, 42], [31, 32, 33], [-1, -1, -1]], jnp.int32)
    out, *_ = _compare(MaskSpec(q_positions=q_pos, kv_positions=kv_pos), q, k, v, w, block=16)
    assert not np.asarray(out)[2].any()


def test_bf16():
    n = 48
    q, k, v, w = _qkv(3, 2, n, n, 4, 2, 32, jnp.bfloat16)
    spec = MaskSpec(q_positions=_positions(2, n), kv_positions=_positions(2, n), prefix_len=jnp.array([5, 20]))
    _compare(spec, q, k, v, w, block=16)


def test_memory_is_blockwise():
    """The compiled backward at 2048 tokens holds far less than the dense [heads, q, kv] float32 scores."""
    n, heads = 2048, 4
    q, k, v, w = _qkv(4, 1, n, n, heads, heads, 16)
    spec = MaskSpec(q_positions=_positions(1, n), kv_positions=_positions(1, n))

    def temp_bytes(fn):
        loss = lambda q, k, v: (fn(q, k, v) * w).sum()
        compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, k, v).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    dense_scores = heads * n * n * 4
    blockwise = temp_bytes(lambda q, k, v: blockwise_attention(q, k, v, spec, scale=0.25, block=64))
    dense = temp_bytes(lambda q, k, v: _xla_attention(q, k, v, spec, 0.25, None))
    assert dense >= dense_scores  # the reference does hold the scores (so the measure can tell)
    assert blockwise < dense_scores / 4, (blockwise, dense_scores)
