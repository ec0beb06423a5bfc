"""Padding along the token axis (axis 1 of `[batch, tokens, ...]`), the one shape every kernel pads."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pad_tokens(x: jax.Array | None, length: int, fill=0) -> jax.Array | None:
    """`x` `[batch, n, ...]` -> `[batch, length, ...]`, the tail filled with `fill` (None passes through)."""
    if x is None or x.shape[1] == length:
        return x
    return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
