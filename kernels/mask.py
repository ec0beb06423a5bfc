"""Attention masks as small per-token arrays (`MaskSpec`), and the dense reference every implementation matches.

Masks are never a dense `[S, S]` array in the models, so that a kernel can skip blocks it can prove invisible. This
module imports no implementation and every implementation imports it, so the package is a tree, not a cycle:
`mask` <- `blockwise_attention`, `flash_attention` (and `pallas.schedule`), `sequence_parallel` <- `attention`.

Visibility of key slot `s` from query `t` in example `b` (all conditions must hold):
  * both are real tokens: `q_positions[b, t] >= 0` and `kv_positions[b, s] >= 0`;
  * causal: `kv_pos <= q_pos`, unless both lie inside the example's bidirectional prefix
    (`q_pos < prefix_len[b]` and `kv_pos < prefix_len[b]`);
  * sliding window: `|q_pos - kv_pos| < window` (Hugging Face's convention: the window counts the query; for
    causal pairs this is `q_pos - kv_pos < window`, inside a bidirectional prefix the window is symmetric, as in
    Hugging Face's bidirectional Gemma 3);
  * same segment, when segment ids are given (packed sequences).
Positions, not slot indices, define the mask, so left padding, right padding and a KV cache all follow.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .padding import pad_tokens

INVISIBLE = -1  # position (and segment id) of padding: no query sees such a key, such a query sees nothing


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MaskSpec:
    q_positions: jax.Array  # [batch, q_len] int32, -1 marks padding
    kv_positions: jax.Array  # [batch, kv_len] int32, -1 marks padding or an empty cache slot
    window: jax.Array | None = None  # [] int32; None means no window
    prefix_len: jax.Array | None = None  # [batch] int32; bidirectional attention inside the prefix
    q_segment_ids: jax.Array | None = None  # [batch, q_len] int32
    kv_segment_ids: jax.Array | None = None  # [batch, kv_len] int32
    causal: bool = dataclasses.field(default=True, metadata=dict(static=True))


def dense_mask(spec: MaskSpec) -> jax.Array:
    """Materialize `spec` as a boolean `[batch, q_len, kv_len]` mask (True = visible): the definition of visibility."""
    q = spec.q_positions[:, :, None]
    kv = spec.kv_positions[:, None, :]
    mask = (q >= 0) & (kv >= 0)
    if spec.causal:
        causal = kv <= q
        if spec.prefix_len is not None:
            p = spec.prefix_len[:, None, None]
            causal = causal | ((q < p) & (kv < p))
        mask &= causal
    if spec.window is not None:
        mask &= jnp.abs(q - kv) < spec.window
    if spec.q_segment_ids is not None:
        mask &= spec.q_segment_ids[:, :, None] == spec.kv_segment_ids[:, None, :]
    return mask


def pad_spec(spec: MaskSpec, q_len: int, kv_len: int) -> MaskSpec:
    """`spec` grown to `q_len` queries and `kv_len` keys by invisible tokens, so kernels can pad to their tiles or
    shards without changing what any real token sees."""
    return dataclasses.replace(
        spec,
        q_positions=pad_tokens(spec.q_positions, q_len, INVISIBLE),
        kv_positions=pad_tokens(spec.kv_positions, kv_len, INVISIBLE),
        q_segment_ids=pad_tokens(spec.q_segment_ids, q_len, INVISIBLE),
        kv_segment_ids=pad_tokens(spec.kv_segment_ids, kv_len, INVISIBLE),
    )
