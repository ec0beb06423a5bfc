"""Trainable mixing of the causal and bidirectional prompt caches (docs/method.md B, step 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bitune_jax.bitune.config import BituneConfig
from bitune_jax.models.config import ModelConfig


def init_mixing(cfg: ModelConfig, bcfg: BituneConfig) -> dict[str, jax.Array]:
    """`w_k`, `w_v`: `[layers]` (per layer) or `[layers, kv_heads]` (per KV head), all at `bcfg.initial_w`."""
    shape = (cfg.num_layers,) if bcfg.mixing == "per_layer" else (cfg.num_layers, cfg.num_kv_heads)
    return {"w_k": jnp.full(shape, bcfg.initial_w, jnp.float32), "w_v": jnp.full(shape, bcfg.initial_w, jnp.float32)}


def alpha(w: jax.Array, tau: float) -> jax.Array:
    """`|w| / (tau + |w|)` in float32: 0 keeps the causal cache, 1 takes the bidirectional one."""
    w = jnp.abs(w.astype(jnp.float32))
    return w / (tau + w)


def mix(causal: jax.Array, bidir: jax.Array, a: jax.Array) -> jax.Array:
    """`(1 - a) * causal + a * bidir` in float32, cast back to the cache dtype.

    `causal`, `bidir`: `[batch, seq, kv_heads, head_dim]`; `a`: `[]` (one layer) or `[kv_heads]`.
    """
    a = a.reshape(a.shape + (1,)) if a.ndim else a  # [kv_heads] -> [kv_heads, 1]
    out = (1.0 - a) * causal.astype(jnp.float32) + a * bidir.astype(jnp.float32)
    return out.astype(causal.dtype)
