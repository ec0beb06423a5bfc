"""Pallas flash attention (interpret mode on CPU) against the dense-mask XLA reference, plus export for cuda / tpu.

Every kernel case checks the forward output and dq, dk, dv (the VJP of a random weighting of the output) in one
jitted call per implementation. float32: max abs error <= 1e-5. bfloat16: both implementations run on the same
bf16 inputs; the stated tolerance is max abs error <= BF16_TOL * (1 + max |reference|) per tensor (bf16 has an 8-bit
mantissa and the two paths round p before P @ V at different points).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from bitune_jax.kernels.attention import _xla_attention, attention
from bitune_jax.kernels.flash_attention import BlockSizes, block_skip_fraction, flash_attention
from bitune_jax.kernels.mask import MaskSpec, dense_mask
from bitune_jax.kernels.pallas import schedule

F32_TOL = 1e-5
BF16_TOL = 2e-2
SMALL = BlockSizes(block_q=16, block_k=16, block_q_bwd=16, block_k_bwd=16)
MIXED = BlockSizes(block_q=16, block_k=32, block_q_bwd=32, block_k_bwd=16)  # padding to lcm, two schedules
TPU = BlockSizes(block_q=128, block_k=128, block_q_bwd=128, block_k_bwd=128)
INT_MAX = np.iinfo(np.int32).max


def _qkv(seed, batch, q_len, kv_len, heads, kv_heads, head_dim, dtype=jnp.float32):
    kq, kk, kv, kw = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(kq, (batch, q_len, heads, head_dim), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (batch, kv_len, kv_heads, head_dim), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (batch, kv_len, kv_heads, head_dim), jnp.float32).astype(dtype)
    w = jax.random.normal(kw, q.shape, jnp.float32).astype(dtype)
    return q, k, v, w


def _value_and_grads(fn, q, k, v, w):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(w))


def _compare(spec, q, k, v, w, *, blocks=SMALL, backend="triton", softcap=None, tol=None):
    """Max abs errors of Pallas vs XLA for (out, dq, dk, dv); asserts they are within tolerance."""
    scale = q.shape[-1] ** -0.5
    ref_fn = lambda q, k, v, spec: _xla_attention(q, k, v, spec, scale, softcap)
    pal_fn = lambda q, k, v, spec: flash_attention(
        q, k, v, spec, scale=scale, logit_softcap=softcap, block_sizes=blocks, backend=backend
    )
    run = lambda f: jax.jit(lambda q, k, v, w, spec: _value_and_grads(functools.partial(f, spec=spec), q, k, v, w))
    ref = run(ref_fn)(q, k, v, w, spec)
    got = run(pal_fn)(q, k, v, w, spec)
    errors, scales = {}, {}
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype, (name, g.shape, r.shape, g.dtype, r.dtype)
        r, g = np.asarray(r, np.float32), np.asarray(g, np.float32)
        assert np.isfinite(g).all(), name
        err = float(np.abs(r - g).max())
        bound = (
            tol
            if tol is not None
            else (F32_TOL if q.dtype == jnp.float32 else BF16_TOL * (1.0 + float(np.abs(r).max())))
        )
        errors[name] = err
        scales[name] = float(np.abs(r).max())
        assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"
    print(
        f"max abs errors ({q.dtype.name}, {backend}): "
        + ", ".join(f"{n}={e:.2e} (max|ref| {scales[n]:.2g})" for n, e in errors.items())
    )
    return errors, got


def _positions(batch, length, start=0):
    return jnp.broadcast_to(jnp.arange(start, start + length, dtype=jnp.int32), (batch, length))


# ------------------------------------------------------------------------------------------------ mask families


@pytest.mark.parametrize("groups,head_dim", [(1, 64), (3, 128), (8, 64)])
def test_prefix_lengths_gqa_head_dims(groups, head_dim):
    """Rows with prefix 0, 1, mid-block, block-aligned and full in one batch; odd length 37."""
    n = 37
    kv_heads = 2 if groups < 8 else 1
    q, k, v, w = _qkv(0, 5, n, n, groups * kv_heads, kv_heads, head_dim)
    spec = MaskSpec(
        q_positions=_positions(5, n), kv_positions=_positions(5, n), prefix_len=jnp.array([0, 1, 7, 16, n], jnp.int32)
    )
    _compare(spec, q, k, v, w)


def test_prefix_bf16():
    n = 45
    q, k, v, w = _qkv(1, 3, n, n, 4, 2, 64, jnp.bfloat16)
    spec = MaskSpec(
        q_positions=_positions(3, n), kv_positions=_positions(3, n), prefix_len=jnp.array([0, 20, 32], jnp.int32)
    )
    _compare(spec, q, k, v, w, blocks=MIXED)


def test_sliding_window_with_prefix_and_mixed_blocks():
    n = 53
    q, k, v, w = _qkv(2, 2, n, n, 6, 2, 64)
    spec = MaskSpec(
        q_positions=_positions(2, n),
        kv_positions=_positions(2, n),
        window=jnp.int32(9),
        prefix_len=jnp.array([13, 0], jnp.int32),
    )
    _compare(spec, q, k, v, w, blocks=MIXED)


def test_segment_ids_packed_rows():
    n = 41
    q, k, v, w = _qkv(3, 2, n, n, 4, 4, 64)
    seg = jnp.array([[0] * 10 + [1] * 20 + [2] * 11, [0] * 30 + [1] * 11], jnp.int32)
    starts = jnp.array([[0] * 10 + [10] * 20 + [30] * 11, [0] * 30 + [30] * 11], jnp.int32)
    pos = _positions(2, n) - starts  # positions restart in each packed segment
    spec = MaskSpec(
        q_positions=pos,
        kv_positions=pos,
        q_segment_ids=seg,
        kv_segment_ids=seg,
        prefix_len=jnp.array([4, 0], jnp.int32),
    )
    _compare(spec, q, k, v, w)


def test_left_padding_and_empty_rows():
    """Left padding of different widths (-1 positions): padded rows output 0 and get zero gradients."""
    n = 29
    q, k, v, w = _qkv(4, 3, n, n, 2, 1, 64)
    pad = jnp.array([0, 5, 17])[:, None]
    pos = jnp.where(jnp.arange(n) >= pad, jnp.arange(n) - pad, -1).astype(jnp.int32)
    spec = MaskSpec(q_positions=pos, kv_positions=pos, prefix_len=jnp.array([3, 8, 1], jnp.int32))
    _, (out, dq, _, _) = _compare(spec, q, k, v, w)
    padded = np.asarray(pos < 0)
    assert not np.asarray(out)[padded].any() and not np.asarray(dq)[padded].any()


def test_decode_queries_over_cache():
    """q_len != kv_len: 3 queries at the end of a 45-slot cache with empty slots (-1) at its end. The third row's
    cache holds nothing its (real) queries may see: they output 0 and get zero gradients."""
    kv_len, used = 45, jnp.array([40, 31, 20])
    q, k, v, w = _qkv(5, 3, 3, kv_len, 8, 2, 128)
    kv_pos = jnp.where(jnp.arange(kv_len) < used[:, None], jnp.arange(kv_len), -1).astype(jnp.int32)
    kv_pos = kv_pos.at[2].set(jnp.where(kv_pos[2] >= 0, kv_pos[2] + 100, -1))  # all far in the future
    q_pos = (used[:, None] - 3 + jnp.arange(3)).astype(jnp.int32)
    spec = MaskSpec(
        q_positions=q_pos, kv_positions=kv_pos, prefix_len=jnp.array([12, 40, 0], jnp.int32), window=jnp.int32(20)
    )
    assert not np.asarray(dense_mask(spec))[2].any()
    _, (out, dq, dk, dv) = _compare(spec, q, k, v, w)
    for x in (out, dq, dk, dv):
        assert not np.asarray(x)[2].any()


def test_bitune_causal_stream_layout():
    """The Bitune causal stream: keys [mixed prompt | causal row], segment ids split prompt and answer queries."""
    batch, seq, width = 2, 40, 24
    mixed_len = jnp.array([23, 9])
    pos_c = _positions(batch, seq)
    pos_b = jnp.where(jnp.arange(width) < mixed_len[:, None], pos_c[:, :width], -1)
    seg_q = (pos_c >= mixed_len[:, None]).astype(jnp.int32)
    kv_seg = jnp.concatenate([jnp.ones((batch, width), jnp.int32), seg_q], 1)
    spec = MaskSpec(
        q_positions=pos_c, kv_positions=jnp.concatenate([pos_b, pos_c], 1), q_segment_ids=seg_q, kv_segment_ids=kv_seg
    )
    q, k, v, w = _qkv(6, batch, seq, width + seq, 4, 2, 64)
    _compare(spec, q, k, v, w)
    # The block test is exact here: it skips precisely the block pairs without a visible entry.
    mask = np.zeros((batch, 48, 64), bool)
    mask[:, :seq] = np.asarray(dense_mask(spec))
    empty = 1.0 - mask.reshape(batch, 3, 16, 4, 16).any(axis=(2, 4)).mean()
    assert abs(float(block_skip_fraction(spec, seq, width + seq, SMALL)) - empty) < 1e-6


def test_non_causal_with_window_and_padding():
    n = 33
    q, k, v, w = _qkv(7, 2, n, n, 2, 2, 64)
    pos = jnp.where(jnp.arange(n) < jnp.array([33, 20])[:, None], jnp.arange(n), -1).astype(jnp.int32)
    spec = MaskSpec(q_positions=pos, kv_positions=pos, window=jnp.int32(6), causal=False)
    _compare(spec, q, k, v, w, blocks=MIXED)


def test_logit_softcap_and_odd_head_dim():
    n = 26
    q, k, v, w = _qkv(8, 2, n, n, 2, 1, 80)
    spec = MaskSpec(q_positions=_positions(2, n), kv_positions=_positions(2, n), prefix_len=jnp.array([5, 0]))
    _compare(spec, 3.0 * q, k, v, w, softcap=5.0)


def test_traced_window_inside_scan():
    """As in the models: `lax.scan` over layers with a traced per-layer window (int32 max for global layers)."""
    n = 35
    q, k, v, w = _qkv(9, 2, n, n, 2, 1, 64)
    windows = jnp.array([6, INT_MAX], jnp.int32)
    base = dict(q_positions=_positions(2, n), kv_positions=_positions(2, n), prefix_len=jnp.array([10, 2]))

    def layers(impl):
        def run(q, k, v):
            def body(x, window):
                spec = MaskSpec(window=window, **base)
                return attention(x, k, v, mask_spec=spec, scale=0.125, impl=impl), None

            return jax.lax.scan(body, q, windows)[0]

        return jax.jit(lambda q, k, v: _value_and_grads(run, q, k, v, w))

    ref, got = layers("xla")(q, k, v), layers("pallas")(q, k, v)
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=F32_TOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.bfloat16, marks=pytest.mark.integration)])
def test_tpu_kernels_interpret(dtype):
    """The Mosaic kernels (heads-major, grid-walked schedule, scalar prefetch) in interpret mode."""
    n = 150
    q, k, v, w = _qkv(10, 3, n, n, 6, 2, 64, dtype)
    seg = jnp.array([[0] * 150, [0] * 70 + [1] * 80, [0] * 150], jnp.int32)
    pos = jnp.where(jnp.arange(n) >= jnp.array([0, 0, 9])[:, None], _positions(3, n), -1)
    spec = MaskSpec(
        q_positions=pos,
        kv_positions=pos,
        q_segment_ids=seg,
        kv_segment_ids=seg,
        prefix_len=jnp.array([0, 130, 64], jnp.int32),
        window=jnp.int32(100),
    )
    _compare(spec, q, k, v, w, blocks=TPU, backend="mosaic_tpu")


@pytest.mark.slow
@pytest.mark.parametrize(
    "groups,head_dim,dtype", [(1, 128, jnp.bfloat16), (3, 64, jnp.bfloat16), (8, 128, jnp.float32)]
)
def test_random_specs_slow(groups, head_dim, dtype):
    """Random lengths, prefixes, windows, padding and segments (heavier; run with -m slow)."""
    rng = np.random.RandomState(groups)
    for _ in range(3):
        batch, n = 3, int(rng.randint(20, 90))
        pad = rng.randint(0, n // 3, size=batch)
        pos = np.where(np.arange(n) >= pad[:, None], np.arange(n) - pad[:, None], -1).astype(np.int32)
        seg = (np.arange(n) >= rng.randint(1, n, size=batch)[:, None]).astype(np.int32)
        spec = MaskSpec(
            q_positions=jnp.asarray(pos),
            kv_positions=jnp.asarray(pos),
            prefix_len=jnp.asarray(rng.randint(0, n + 1, size=batch), jnp.int32),
            window=jnp.int32(rng.randint(1, n)),
            q_segment_ids=jnp.asarray(seg),
            kv_segment_ids=jnp.asarray(seg),
        )
        q, k, v, w = _qkv(int(rng.randint(1 << 30)), batch, n, n, 2 * groups, 2, head_dim, dtype)
        _compare(spec, q, k, v, w, blocks=MIXED)


# ------------------------------------------------------------------------------------------------ block schedule


def test_block_schedule_is_conservative_and_skips():
    """No visible (query, key) pair lies in a skipped block, FULL blocks are entirely visible, causal skips the upper
    triangle and masks only the diagonal."""
    rng = np.random.RandomState(0)
    n, bq, bk = 70, 16, 8
    pos = jnp.where(jnp.arange(n) >= jnp.array([0, 11, 3])[:, None], _positions(3, n) - 5, -1)
    seg = jnp.asarray((np.arange(n) >= rng.randint(1, n, size=3)[:, None]).astype(np.int32))
    spec = MaskSpec(
        q_positions=pos,
        kv_positions=pos,
        window=jnp.int32(24),
        prefix_len=jnp.array([0, 30, 5]),
        q_segment_ids=seg,
        kv_segment_ids=seg,
    )
    bounds = schedule.token_bounds(spec, 80, 72)
    states = np.asarray(schedule.block_states(bounds, bq, bk))
    mask = np.zeros((3, 80, 72), bool)
    mask[:, :n, :n] = np.asarray(dense_mask(spec))
    tiles = mask.reshape(3, 80 // bq, bq, 72 // bk, bk)
    assert not (tiles.any(axis=(2, 4)) & (states == schedule.SKIP)).any()
    assert (tiles.all(axis=(2, 4)) == (states == schedule.FULL)).all()  # exact for these monotone positions
    assert (states == schedule.SKIP).any() and (states == schedule.FULL).any()
    sched = np.asarray(schedule.schedule(jnp.asarray(states)))
    for b, i in np.ndindex(*states.shape[:2]):
        count = sched[b, i, 0]
        visited = np.flatnonzero(states[b, i] != schedule.SKIP)
        np.testing.assert_array_equal(sched[b, i, 1 : 1 + count] >> 1, visited)
        np.testing.assert_array_equal(sched[b, i, 1 : 1 + count] & 1, states[b, i, visited] == schedule.PARTIAL)
    causal = MaskSpec(q_positions=_positions(1, 4096), kv_positions=_positions(1, 4096))
    blocks = BlockSizes(128, 128, 128, 128)
    assert abs(float(block_skip_fraction(causal, 4096, 4096, blocks)) - (1 - 33 / 64)) < 1e-6  # 32 blocks: 496/1024
    causal_states = schedule.block_states(schedule.token_bounds(causal, 4096, 4096), 128, 128)
    assert int((causal_states == schedule.PARTIAL).sum()) == 32  # only the diagonal tiles need the mask


# ------------------------------------------------------------------------------------------------ export


def _export_case(full: bool):
    """(function, abstract args): `full` = bf16, GQA 4, head_dim 128, prefix + window + segments; else float32,
    GQA 3, head_dim 64, plain causal, q_len != kv_len (decode-like)."""
    f = jax.ShapeDtypeStruct
    b, t, s = 2, 300, 330
    heads, kv_heads, d, dtype = (8, 2, 128, jnp.bfloat16) if full else (6, 2, 64, jnp.float32)
    qkv = (f((b, t, heads, d), dtype), f((b, s, kv_heads, d), dtype), f((b, s, kv_heads, d), dtype))
    if full:
        meta = (
            f((b, t), jnp.int32),
            f((b, s), jnp.int32),
            f((b,), jnp.int32),
            f((), jnp.int32),
            f((b, t), jnp.int32),
            f((b, s), jnp.int32),
        )
        names = ("q_positions", "kv_positions", "prefix_len", "window", "q_segment_ids", "kv_segment_ids")
    else:
        meta, names = (f((b, t), jnp.int32), f((b, s), jnp.int32)), ("q_positions", "kv_positions")

    def attend(q, k, v, *arrays):
        spec = MaskSpec(**dict(zip(names, arrays)))
        return attention(q, k, v, mask_spec=spec, scale=0.088, impl="pallas")

    return attend, qkv + meta


@pytest.mark.parametrize("full", [True, False], ids=["bf16-gqa4-all-mask-fields", "f32-gqa3-causal-decode"])
@pytest.mark.parametrize("platform,custom_call", [("cuda", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
@pytest.mark.parametrize("what", ["forward", "grad"])
def test_export_lowers_real_kernels(platform, custom_call, what, full):
    attend, args = _export_case(full)
    if what == "forward":
        fn = attend
    else:

        def fn(q, k, v, *meta):
            loss = lambda q, k, v: attend(q, k, v, *meta).astype(jnp.float32).sum()
            return jax.grad(loss, (0, 1, 2))(q, k, v)

    exported = export.export(
        jax.jit(fn),
        platforms=[platform],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(*args)
    assert exported.platforms == (platform,)
    text = exported.mlir_module()
    # forward: one kernel; grad: forward (residuals) + dQ + dK/dV kernels.
    assert text.count(custom_call) == (1 if what == "forward" else 3), text.count(custom_call)
