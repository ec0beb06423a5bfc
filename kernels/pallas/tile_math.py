"""In-kernel tile math shared by the Triton and Mosaic kernels (plain `jnp`/`lax`, so both lowerings accept it)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

NT = (((1,), (1,)), ((), ()))  # a @ b.T
NN = (((1,), (0,)), ((), ()))  # a @ b
TN = (((0,), (0,)), ((), ()))  # a.T @ b
# Initial running max: finite, so `exp(m_prev - m_next)` never sees inf - inf; masked logits are -inf, so a row that
# has seen nothing keeps a zero denominator and is recognizable at the end.
M_FLOOR = -0.7 * float(jnp.finfo(jnp.float32).max)


def apply_mask(s, partial, visible):
    """`s` with -inf where `visible()` is False; FULL tiles (`partial` False) skip the mask arithmetic."""
    return lax.cond(partial, lambda s: jnp.where(visible(), s, -jnp.inf), lambda s: s, s)


def cap(s, softcap: float | None):
    """Logit soft-capping `softcap * tanh(s / softcap)`; returns the capped scores and `tanh` (None if off)."""
    if softcap is None:
        return s, None
    t = jnp.tanh(s / softcap)
    return t * softcap, t


def uncap(ds, t):
    """Chain rule through `cap`: d(capped)/d(raw) = 1 - tanh^2."""
    return ds if t is None else ds * (1.0 - t * t)


def finish_softmax(m, denom):
    """`(1 / denom, lse)` guarded for rows that saw nothing (denom 0): those output 0 and get lse 0."""
    seen = denom > 0.0
    safe = jnp.where(seen, denom, 1.0)
    return jnp.where(seen, 1.0 / safe, 0.0), jnp.where(seen, m + jnp.log(safe), 0.0)
