"""Next-token selection: greedy, temperature, top-k and top-p (nucleus) sampling."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut

    def __post_init__(self):
        if not 0 <= self.temperature < float("inf"):  # NaN too: it would turn every logit into NaN
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


def sample_token(logits: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """`logits [batch, vocab]` -> token ids `[batch]` int32."""
    if cfg.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / cfg.temperature
    if cfg.top_k:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if cfg.top_p < 1.0:
        logits = jnp.where(jax.vmap(_nucleus, (0, None))(logits, cfg.top_p), logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def sample_rows(
    logits: jax.Array,  # [rows, vocab]
    keys: jax.Array,  # [rows] typed PRNG keys, one per row
    temperature: jax.Array,  # [rows] float32, 0 for greedy
    top_p: jax.Array,  # [rows] float32 in (0, 1]
    top_k: jax.Array,  # [rows] int32, 0 for no cut
) -> jax.Array:
    """Token ids `[rows]` int32, each row by its own settings and key (the rows of an engine belong to different
    requests). The cuts are `sample_token`'s: top-k first, then the smallest top-p prefix of what is left."""

    def one(row, key, t, p, k):
        row = row.astype(jnp.float32)
        scaled = row / jnp.where(t > 0, t, 1.0)
        order = _sortable(scaled)
        kth = _smallest_kept(order, jnp.ones_like(scaled), k.astype(jnp.float32))
        scaled = jnp.where((k <= 0) | (order >= kth), scaled, -jnp.inf)
        scaled = jnp.where(_nucleus(scaled, p), scaled, -jnp.inf)
        return jnp.where(t > 0, jax.random.categorical(key, scaled), jnp.argmax(row)).astype(jnp.int32)

    return jax.vmap(one)(logits, keys, temperature, top_p, top_k)


def _nucleus(logits: jax.Array, p: jax.Array) -> jax.Array:
    """`[vocab]` bool: the smallest set of most likely tokens whose mass reaches `p` (the token that crosses it, and
    its ties, included), which is what a sort and a cumulative sum would keep, without the sort (the sort of a
    50k vocabulary was 2/3 of a SmolLM2 decode step on CPU). A token is kept when the mass strictly above it is < p."""
    kept = _sortable(logits) >= _smallest_kept(_sortable(logits), jax.nn.softmax(logits), p)
    return kept | (p >= 1.0)


def _sortable(x: jax.Array) -> jax.Array:
    """float32 -> int32 in the same order (the sign-magnitude bits made two's complement)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _smallest_kept(order: jax.Array, weights: jax.Array, bound: jax.Array) -> jax.Array:
    """The smallest `t` with `sum(weights[order > t]) < bound` (`order` int32 `[vocab]`): bisection over the 2^32
    int32 values, exact in 32 steps of one masked sum each."""

    def halve(_, bounds):
        lo, hi = bounds  # weight above lo >= bound > weight above hi
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        above = jnp.sum(jnp.where(order > mid, weights, 0.0))
        return jnp.where(above < bound, lo, mid), jnp.where(above < bound, mid, hi)

    lo = jnp.int32(jnp.iinfo(jnp.int32).min)
    return jax.lax.fori_loop(0, 32, halve, (lo, jnp.max(order)))[1]
