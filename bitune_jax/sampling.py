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
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
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
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        cutoff_index = jnp.sum(mass_before < cfg.top_p, axis=-1, keepdims=True) - 1
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
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
        ordered = jnp.sort(scaled)[::-1]
        kth = ordered[jnp.clip(k - 1, 0, row.shape[0] - 1)]
        keep_k = (k <= 0) | (scaled >= kth)
        ordered = jnp.where((k <= 0) | (ordered >= kth), ordered, -jnp.inf)
        probs = jax.nn.softmax(ordered)
        mass_before = jnp.cumsum(probs) - probs
        cutoff = ordered[jnp.sum(mass_before < p) - 1]
        keep = keep_k & ((p >= 1.0) | (scaled >= cutoff))
        sampled = jax.random.categorical(key, jnp.where(keep, scaled, -jnp.inf))
        return jnp.where(t > 0, sampled, jnp.argmax(row)).astype(jnp.int32)

    return jax.vmap(one)(logits, keys, temperature, top_p, top_k)
