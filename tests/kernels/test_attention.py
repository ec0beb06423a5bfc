"""The entry point's contract: `kernels.attention(..., impl=...)` for every impl against attention over `dense_mask`.

The reference is float64 NumPy softmax attention over `dense_mask(spec)` (K/V heads repeated for GQA; rows that see
nothing give 0), with its gradients written out by hand, so it shares no code with any implementation but the mask.
Each mask family gets one small case: causal, bidirectional prefix, sliding window, left and right padding, a KV cache
with empty slots, packed segments, GQA. "pallas" runs the Triton-style kernels in interpret mode, which is what
`flash_attention` picks on a CPU backend.

Tolerances, float32 against float64 with values up to about 4: outputs atol 2e-6 / rtol 2e-5, gradients atol 4e-6 /
rtol 4e-5. Measured worst max abs errors over all impls: 3.4e-7 (outputs), 6.8e-7 (gradients); moving any case's
mask by one token (window, prefix, padding, cache slot, positions) moves the reference by 0.25 or more.
In-depth kernel tests (block sizes, bf16, soft-capping, schedules, export) live in test_blockwise_attention.py and
test_flash_attention.py.
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax import kernels
from bitune_jax.kernels.attention import IMPLS, MaskSpec, attention, dense_mask, resolve_impl

# The modules themselves (the package's attribute `attention` is the function, not its module).
attention_module = importlib.import_module("bitune_jax.kernels.attention")
mask_module = importlib.import_module("bitune_jax.kernels.mask")

IMPLEMENTATIONS = ("xla", "blockwise", "pallas")
OUT_TOL = dict(atol=2e-6, rtol=2e-5)
GRAD_TOL = dict(atol=4e-6, rtol=4e-5)
N = 24  # tokens per row in the square cases: not a multiple of any kernel tile
HEADS, HEAD_DIM = 2, 16
SCALE = HEAD_DIM**-0.5


def _arange(batch: int, length: int) -> np.ndarray:  # [batch, length] int32
    return np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))


def _qkv(seed: int, batch: int, q_len: int, kv_len: int, heads: int = HEADS, kv_heads: int = HEADS):
    """q `[batch, q_len, heads, dim]`, k and v `[batch, kv_len, kv_heads, dim]`, float32 (NumPy: no setup compiles)."""
    rng = np.random.default_rng(seed)
    shapes = ((batch, q_len, heads, HEAD_DIM), *[(batch, kv_len, kv_heads, HEAD_DIM)] * 2)
    return tuple(rng.standard_normal(shape, dtype=np.float32) for shape in shapes)


def _segments(starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Two packed segments per row, the second from `starts[row]`: (segment ids, positions restarting at 0)."""
    start = np.array(starts, np.int32)[:, None]
    idx = _arange(len(starts), N)
    seg = (idx >= start).astype(np.int32)
    return seg, np.where(seg == 1, idx - start, idx).astype(np.int32)


def _case(name: str) -> tuple[MaskSpec, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One small spec per mask family, and its q, k, v."""
    pos = _arange(2, N)
    if name == "causal":
        return MaskSpec(pos, pos), _qkv(0, 2, N, N)
    if name == "prefix":  # row 0: bidirectional inside 9 tokens; row 1: wholly bidirectional
        return MaskSpec(pos, pos, prefix_len=np.array([9, N], np.int32)), _qkv(1, 2, N, N)
    if name == "window":
        return MaskSpec(pos, pos, window=np.int32(5)), _qkv(2, 2, N, N)
    if name == "padding":  # row 0 left-padded by 5, row 1 right-padded by 7 (positions -1)
        padded = np.stack([np.where(pos[0] >= 5, pos[0] - 5, -1), np.where(pos[1] < N - 7, pos[1], -1)])
        return MaskSpec(padded, padded), _qkv(3, 2, N, N)
    if name == "kv_cache":  # 4 decode queries over N cache slots: row 0 fills 14 slots, row 1 has a hole and a tail
        q_pos = np.array([[10, 11, 12, 13], [16, 17, 18, 19]], np.int32)
        slots = np.arange(N, dtype=np.int32)
        kv_pos = np.stack(
            [np.where(slots < 14, slots, -1), np.where((slots < 20) & ((slots < 4) | (slots > 6)), slots, -1)]
        )
        return MaskSpec(q_pos, kv_pos), _qkv(4, 2, 4, N)
    if name == "segments":
        seg, seg_pos = _segments([10, 17])
        return MaskSpec(seg_pos, seg_pos, q_segment_ids=seg, kv_segment_ids=seg), _qkv(5, 2, N, N)
    if name == "gqa":  # 6 query heads over 2 kv heads: query head h reads kv head h // 3
        return MaskSpec(pos, pos, prefix_len=np.array([0, 7], np.int32)), _qkv(6, 2, N, N, heads=6, kv_heads=2)
    raise ValueError(name)


CASES = ("causal", "prefix", "window", "padding", "kv_cache", "segments", "gqa")


def _probs(q, k, spec, scale):
    """float64 `[batch, heads, q_len, kv_len]` attention probabilities over `dense_mask(spec)`, and K repeated."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
    visible = np.asarray(dense_mask(spec))[:, None]  # [batch, 1, q_len, kv_len]
    s = np.where(visible, np.einsum("bthd,bshd->bhts", q, k) * scale, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    norm = p.sum(-1, keepdims=True)
    return p / np.where(norm > 0, norm, 1.0), k


def _reference(q, k, v, spec, scale):
    """float64 `[batch, q_len, heads, head_dim]`: rows that see nothing give 0."""
    p, _ = _probs(q, k, spec, scale)
    v = np.repeat(np.asarray(v, np.float64), q.shape[2] // v.shape[2], axis=2)
    return np.einsum("bhts,bshd->bthd", p, v)


def _reference_grads(q, k, v, spec, scale, do):
    """float64 (dq, dk, dv) of `sum(_reference(q, k, v) * do)`; dk, dv summed over each kv head's query heads."""
    groups = q.shape[2] // k.shape[2]
    p, k_rep = _probs(q, k, spec, scale)
    v_rep = np.repeat(np.asarray(v, np.float64), groups, axis=2)
    do, q64 = np.asarray(do, np.float64), np.asarray(q, np.float64)
    dp = np.einsum("bthd,bshd->bhts", do, v_rep)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True)) * scale
    dq = np.einsum("bhts,bshd->bthd", ds, k_rep)
    dk = np.einsum("bhts,bthd->bshd", ds, q64)
    dv = np.einsum("bhts,bthd->bshd", p, do)
    fold = lambda x: x.reshape(*x.shape[:2], k.shape[2], groups, x.shape[-1]).sum(3)  # [b, s, h, d] -> [b, s, kvh, d]
    return dq, fold(dk), fold(dv)


@functools.partial(jax.jit, static_argnames=("impl",))
def _attend(q, k, v, spec: MaskSpec, impl: str) -> jax.Array:
    return attention(q, k, v, mask_spec=spec, scale=SCALE, impl=impl)


@functools.partial(jax.jit, static_argnames=("impl",))
def _attend_and_grads(q, k, v, spec: MaskSpec, do, impl: str) -> tuple[jax.Array, ...]:
    """(out, dq, dk, dv) for the cotangent `do`, in one program."""
    out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, mask_spec=spec, scale=SCALE, impl=impl), q, k, v)
    return out, *vjp(do)


# ------------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_forward_matches_dense_mask_reference(impl, case):
    spec, (q, k, v) = _case(case)
    got = _attend(q, k, v, spec, impl)
    assert got.shape == q.shape and got.dtype == q.dtype
    np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, spec, SCALE), **OUT_TOL)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_merged_segments_would_be_caught(impl):
    """Each packed segment sees only itself: letting the segments see each other moves the output far off."""
    spec, (q, k, v) = _case("segments")
    merged = MaskSpec(spec.q_positions, spec.kv_positions)
    ref = _reference(q, k, v, spec, SCALE)
    assert np.abs(np.asarray(_attend(q, k, v, merged, impl)) - ref).max() > 0.1


# ------------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_gradients_match_reference(impl):
    """dq, dk, dv of one case that mixes every field: GQA, prefix, window, left/right padding, two segments."""
    seg, seg_pos = _segments([13, 9])
    pos = np.stack([np.where(seg_pos[0] >= 3, seg_pos[0] - 3, -1), np.where(np.arange(N) < N - 4, seg_pos[1], -1)])
    spec = MaskSpec(
        pos, pos, window=np.int32(6), prefix_len=np.array([5, 4], np.int32), q_segment_ids=seg, kv_segment_ids=seg
    )
    q, k, v = _qkv(8, 2, N, N, heads=4, kv_heads=2)
    do = _qkv(9, 2, N, N, heads=4)[0]
    out, *grads = _attend_and_grads(q, k, v, spec, do, impl)
    np.testing.assert_allclose(np.asarray(out), _reference(q, k, v, spec, SCALE), **OUT_TOL)
    for name, got, ref in zip(("dq", "dk", "dv"), grads, _reference_grads(q, k, v, spec, SCALE, do)):
        np.testing.assert_allclose(np.asarray(got), ref, err_msg=name, **GRAD_TOL)


# ------------------------------------------------------------------------------------------------ "auto" and errors


def test_auto_resolution_rules():
    """Decode-sized query blocks stay dense; accelerators get Pallas; elsewhere blockwise from BLOCKWISE_MIN_SCORES."""
    assert IMPLS == (*IMPLEMENTATIONS, "auto")
    min_q, min_scores = attention_module.PALLAS_MIN_Q, attention_module.BLOCKWISE_MIN_SCORES
    for platform in ("gpu", "cuda", "rocm", "tpu"):
        assert resolve_impl("auto", min_q - 1, 1 << 20, platform) == "xla"
        assert resolve_impl("auto", min_q, min_q, platform) == "pallas"
    assert resolve_impl("auto", min_q, min_scores // min_q - 1, "cpu") == "xla"
    assert resolve_impl("auto", min_q, min_scores // min_q, "cpu") == "blockwise"
    assert resolve_impl("auto", min_q - 1, 1 << 30, "cpu") == "xla"
    for impl in IMPLEMENTATIONS:
        assert resolve_impl(impl, 1, 1, "cpu") == resolve_impl(impl, 1 << 15, 1 << 15, "tpu") == impl
    assert resolve_impl("auto", 1, 1) == "xla"  # the default platform: this test's backend
    with pytest.raises(ValueError, match="unknown attention impl 'flash'"):
        resolve_impl("flash", 1, 1)


def test_auto_runs_the_implementation_it_resolves(monkeypatch):
    """`attention(impl="auto")` calls what `resolve_impl` names for its lengths and platform, and returns its result
    (the implementations are stand-ins here: the tests above check each one)."""
    names = ("_xla_attention", "blockwise_attention", "flash_attention")
    for i, name in enumerate(names):
        monkeypatch.setattr(attention_module, name, lambda q, *args, _i=i, **kwargs: jnp.full_like(q, _i))
    spec, (q, k, v) = _case("prefix")
    called = lambda: names[int(attention(q, k, v, mask_spec=spec, scale=1.0, impl="auto")[0, 0, 0, 0])]

    assert called() == "_xla_attention"  # 24 queries: a decode-sized block
    monkeypatch.setattr(attention_module, "PALLAS_MIN_Q", N)
    assert called() == "_xla_attention"  # 24 x 24 scores on cpu
    monkeypatch.setattr(attention_module, "BLOCKWISE_MIN_SCORES", N * N)
    assert called() == "blockwise_attention"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(attention_module.self_check, "verified_impl", lambda *_, **__: "pallas")  # (its own tests)
    assert called() == "flash_attention"


def test_entry_point_rejects_bad_heads_and_impls():
    spec, (q, k, v) = _case("gqa")
    with pytest.raises(ValueError, match="not a multiple of key/value heads"):
        attention(q[:, :, :5], k, v, mask_spec=spec, scale=1.0)
    with pytest.raises(ValueError, match="unknown attention impl"):
        attention(q, k, v, mask_spec=spec, scale=1.0, impl="cuda")


def test_mask_module_is_the_one_definition():
    """The re-exports are the same objects, so every implementation and caller shares one `MaskSpec` pytree type."""
    assert kernels.MaskSpec is attention_module.MaskSpec is mask_module.MaskSpec
    assert kernels.dense_mask is attention_module.dense_mask is mask_module.dense_mask
