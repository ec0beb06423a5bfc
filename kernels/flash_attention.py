"""Pallas flash attention for `MaskSpec` masks (causal, bidirectional prefix, window, segments, padding), with a
custom VJP whose backward is also Pallas (dQ kernel, dK/dV kernel).

Layout and blocking
  * Inputs stay in the models' `[batch, seq, heads, head_dim]`; GQA never repeats K/V (query head `h` reads kv head
    `h // groups`; the dK/dV kernel owns a kv head and sums its query heads in registers/VMEM).
  * The mask is never materialized. An XLA prologue (`kernels.pallas.schedule`) turns the spec into one key-position
    interval per query (`q_lo <= kv_pos <= q_hi`, plus a segment test), pads both sequences to the block size with
    invisible tokens, and derives a per-(query block, key block) visibility test from the block hulls of those
    intervals. Visible blocks are compacted into per-block index lists (query-major for forward and dQ, key-major for
    dK/dV), so fully masked blocks (causal upper triangle, outside the window, outside the bidirectional prefix,
    other segments, padding) cost neither loads nor FLOPs. Everything is runtime data, so per-example prefixes and a
    per-layer traced window inside `lax.scan` need no recompilation.
  * GPU (Triton, `kernels.pallas.gpu_triton`): grid (query block, head, batch), an in-kernel `fori_loop` over the
    visible key blocks with online softmax in registers. Defaults: forward 128x64, backward 64x64 tiles.
  * TPU (Mosaic, `kernels.pallas.tpu_mosaic`): heads-major layout, key blocks as the innermost "arbitrary" grid axis,
    the schedule scalar-prefetched into SMEM and read by the K/V index maps (splash-attention style), 128x128 tiles.
  * CPU: the Triton-style kernels under `interpret=True` (what the tests exercise; the TPU kernels are tested in
    interpret mode too).
  The lowering is picked by `lax.platform_dependent` at lowering time, so `jax.export` from a CPU host to `cuda` or
  `tpu` emits the real kernels (Triton custom call / `tpu_custom_call`).

The Bitune block
  Per layer the fused Bitune forward (`bitune_jax.bitune.forward`) needs (a) the bidirectional prompt stream: queries
  and keys at prompt positions `< P - 1`, all mutually visible, later slots padding; and (b) the causal stream whose
  prompt queries read the causal prompt K/V while the last prompt token and the answer rows read the *mixed* prompt
  K/V and then their own causal K/V. Both are plain `MaskSpec`s and need no Bitune-specific kernel code: (a) is
  `prefix_len = P - 1` with positions -1 past it (one bidirectional square per example; padding tiles skipped);
  (b) has keys `[mixed prompt | causal row]` and segment ids (prompt queries 0, answer queries 1; mixed slots 1,
  causal-row slots as their queries). The block test is exact for this layout: prompt query blocks never load mixed
  key blocks, answer blocks never load causal prompt key blocks, the causal upper triangle and the unused mixed slots
  (positions -1) are skipped, so (b) costs what a plain causal pass over `prompt + answer` costs, with the answer x
  prompt rectangle reading the mixed keys. Chosen layout: one launch per stream and layer (two per layer). Both
  launches depend only on the layer's projections, so they could be one launch by stacking the streams along the
  batch axis (pad (a) to (b)'s lengths with position -1 and give it a constant segment id; the padding tiles are
  skipped, so the FLOPs are the same), but that needs a concatenated copy of Q/K/V to save one launch; per-example
  prompt lengths are runtime data either way, so neither layout recompiles when the prompts change.

Logit soft-capping (`softcap * tanh(s / softcap)`, Gemma 2) is applied in-kernel, with its derivative in the backward.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

from .mask import MaskSpec
from .padding import pad_tokens
from .pallas import gpu_triton, schedule, tpu_mosaic

BACKENDS = ("triton", "mosaic_tpu")


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    block_q: int  # forward query tile
    block_k: int  # forward key tile
    block_q_bwd: int  # backward (dQ and dK/dV) query tile
    block_k_bwd: int  # backward key tile


DEFAULT_BLOCKS = {
    "triton": BlockSizes(block_q=128, block_k=64, block_q_bwd=64, block_k_bwd=64),
    "mosaic_tpu": BlockSizes(block_q=128, block_k=128, block_q_bwd=128, block_k_bwd=128),
}
_FAMILIES = {"triton": gpu_triton, "mosaic_tpu": tpu_mosaic}


@dataclasses.dataclass(frozen=True)
class _Config:  # static (hashable) part of a call
    scale: float
    softcap: float | None
    block_sizes: tuple[tuple[str, BlockSizes], ...]  # per family; missing families use DEFAULT_BLOCKS
    backend: str | None
    interpret: bool


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _padded_lengths(blocks: BlockSizes, q_len: int, kv_len: int) -> tuple[int, int]:
    mq = math.lcm(blocks.block_q, blocks.block_q_bwd)
    mk = math.lcm(blocks.block_k, blocks.block_k_bwd)
    return _round_up(q_len, mq), _round_up(kv_len, mk)


def _blocks(backend: str, cfg: _Config, head_dim: int) -> BlockSizes:
    blocks = dict(cfg.block_sizes).get(backend, DEFAULT_BLOCKS[backend])
    family = _FAMILIES[backend]
    family.validate(blocks.block_q, blocks.block_k, head_dim)
    family.validate(blocks.block_q_bwd, blocks.block_k_bwd, head_dim)
    return blocks


def _family_forward(q, k, v, spec, *, backend: str, cfg: _Config, interpret: bool):
    blocks = _blocks(backend, cfg, q.shape[-1])
    q_len, kv_len = q.shape[1], k.shape[1]
    q_pad, kv_pad = _padded_lengths(blocks, q_len, kv_len)
    bounds = schedule.token_bounds(spec, q_pad, kv_pad)
    sched = schedule.schedule(schedule.block_states(bounds, blocks.block_q, blocks.block_k))
    out, lse = _FAMILIES[backend].forward(
        pad_tokens(q, q_pad),
        pad_tokens(k, kv_pad),
        pad_tokens(v, kv_pad),
        bounds,
        sched,
        scale=cfg.scale,
        softcap=cfg.softcap,
        block_q=blocks.block_q,
        block_k=blocks.block_k,
        interpret=interpret,
    )
    return out[:, :q_len], lse[:, :, :q_len]


def _family_backward(q, k, v, spec, out, lse, do, *, backend: str, cfg: _Config, interpret: bool):
    blocks = _blocks(backend, cfg, q.shape[-1])
    q_len, kv_len = q.shape[1], k.shape[1]
    q_pad, kv_pad = _padded_lengths(blocks, q_len, kv_len)
    bounds = schedule.token_bounds(spec, q_pad, kv_pad)
    states = schedule.block_states(bounds, blocks.block_q_bwd, blocks.block_k_bwd)
    sched_q, sched_kv = schedule.schedule(states), schedule.schedule(states.transpose(0, 2, 1))
    lse = jnp.pad(lse, ((0, 0), (0, 0), (0, q_pad - q_len)))
    dq, dk, dv = _FAMILIES[backend].backward(
        pad_tokens(q, q_pad),
        pad_tokens(k, kv_pad),
        pad_tokens(v, kv_pad),
        pad_tokens(out, q_pad),
        lse,
        pad_tokens(do, q_pad),
        bounds,
        sched_q,
        sched_kv,
        scale=cfg.scale,
        softcap=cfg.softcap,
        block_q=blocks.block_q_bwd,
        block_k=blocks.block_k_bwd,
        interpret=interpret,
    )
    return dq[:, :q_len], dk[:, :kv_len], dv[:, :kv_len]


def _dispatch(fn, cfg: _Config, *args):
    """Run `fn` with the kernel family for the platform this is lowered for (or the one `cfg` forces)."""
    if cfg.backend is not None:
        return fn(*args, backend=cfg.backend, cfg=cfg, interpret=cfg.interpret)
    branch = lambda backend, interpret: functools.partial(fn, backend=backend, cfg=cfg, interpret=interpret)
    return lax.platform_dependent(
        *args,
        cpu=branch("triton", True),
        cuda=branch("triton", False),
        rocm=branch("triton", False),
        tpu=branch("mosaic_tpu", False),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, spec: MaskSpec, cfg: _Config):
    return _dispatch(_family_forward, cfg, q, k, v, spec)[0]


def _flash_fwd(q, k, v, spec: MaskSpec, cfg: _Config):
    out, lse = _dispatch(_family_forward, cfg, q, k, v, spec)
    return out, (q, k, v, spec, out, lse)


def _flash_bwd(cfg: _Config, res, do):
    q, k, v, spec, out, lse = res
    dq, dk, dv = _dispatch(_family_backward, cfg, q, k, v, spec, out, lse, do)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(
    q: jax.Array,  # [batch, q_len, heads, head_dim]
    k: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    v: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    mask_spec: MaskSpec,
    *,
    scale: float,
    logit_softcap: float | None = None,
    block_sizes: BlockSizes | Mapping[str, BlockSizes] | None = None,
    backend: str | None = None,
    interpret: bool | None = None,
) -> jax.Array:  # [batch, q_len, heads, head_dim], q.dtype
    """Flash attention with `mask_spec` visibility; differentiable in q, k, v (Pallas forward and backward).

    `backend=None` picks the kernels when lowering: Triton on cuda/rocm, Mosaic on tpu, the Triton-style kernels
    in interpret mode on cpu. `backend="triton" | "mosaic_tpu"` forces a family (interpreted when `interpret`,
    which defaults to "the default backend is cpu"). `block_sizes`: one `BlockSizes` for every family that gets
    traced (with `backend=None` that is all of them), or a mapping family -> `BlockSizes`; families not given use
    `DEFAULT_BLOCKS`. TPU tiles must be multiples of 128, Triton tiles powers of two >= 16.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"expected q [b, t, h, d] and k, v [b, s, kv_h, d]; got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads {q.shape[2]} are not a multiple of key/value heads {k.shape[2]}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown flash attention backend {backend!r}; choose from {BACKENDS} or None")
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    softcap = None if logit_softcap is None else float(logit_softcap)
    if block_sizes is None:
        block_sizes = {}
    elif isinstance(block_sizes, BlockSizes):
        block_sizes = dict.fromkeys(BACKENDS if backend is None else (backend,), block_sizes)
    unknown = set(block_sizes) - set(BACKENDS)
    if unknown:
        raise ValueError(f"block_sizes for unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    cfg = _Config(
        scale=float(scale),
        softcap=softcap,
        block_sizes=tuple(sorted(block_sizes.items())),
        backend=backend,
        interpret=bool(interpret),
    )
    return _flash(q, k, v, mask_spec, cfg)


def block_fractions(
    mask_spec: MaskSpec, q_len: int, kv_len: int, block_sizes: BlockSizes | None = None, backend: str = "triton"
) -> dict[str, jax.Array]:
    """Fractions of forward (query block, key block) tiles that are skipped, computed with the mask ("partial"), and
    computed without mask arithmetic ("full") for `mask_spec` (per batch row, averaged)."""
    blocks = block_sizes or DEFAULT_BLOCKS[backend]
    _FAMILIES[backend].validate(blocks.block_q, blocks.block_k, 0)
    q_pad, kv_pad = _padded_lengths(blocks, q_len, kv_len)
    states = schedule.block_states(schedule.token_bounds(mask_spec, q_pad, kv_pad), blocks.block_q, blocks.block_k)
    return {
        name: (states == value).mean(dtype=jnp.float32)
        for name, value in (("skipped", schedule.SKIP), ("partial", schedule.PARTIAL), ("full", schedule.FULL))
    }


def block_skip_fraction(
    mask_spec: MaskSpec, q_len: int, kv_len: int, block_sizes: BlockSizes | None = None, backend: str = "triton"
) -> jax.Array:
    """Fraction of forward (query block, key block) tiles the kernels skip for `mask_spec`."""
    return block_fractions(mask_spec, q_len, kv_len, block_sizes, backend)["skipped"]
