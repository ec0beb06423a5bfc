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
        logits = jnp.where(_nucleus(logits, jnp.full(logits.shape[:1], cfg.top_p)), logits, -jnp.inf)
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
    logits = logits.astype(jnp.float32)
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    order = _sortable(scaled)
    top, where = _candidates(scaled)
    kth = _smallest_kept(order, top, jnp.ones_like(scaled), jnp.ones_like(top, jnp.float32), top_k.astype(jnp.float32))
    scaled = jnp.where((top_k[:, None] <= 0) | (order >= kth[:, None]), scaled, -jnp.inf)
    # The cut keeps the largest values, so the same indices are still the largest, in the same order.
    scaled = jnp.where(_nucleus(scaled, top_p, where), scaled, -jnp.inf)
    draws = jax.vmap(jax.random.categorical)(keys, scaled)
    return jnp.where(temperature > 0, draws, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


CANDIDATES = 64  # the most likely tokens a cut is first looked for among (the whole vocabulary where it is not there)


def _nucleus(logits: jax.Array, p: jax.Array, where: jax.Array | None = None) -> jax.Array:
    """`[rows, vocab]` bool: per row the smallest set of most likely tokens whose mass reaches `p` (`[rows]`; the
    token that crosses it, and its ties, included), which is what a sort and a cumulative sum would keep, without
    the sort (the sort of a 50k vocabulary was 2/3 of a SmolLM2 decode step on CPU). A token is kept when the mass
    strictly above it is < p. `where`: the indices of each row's largest values, largest first, if known
    (`[rows, candidates]`, as `_candidates` gives them)."""
    order = _sortable(logits)
    if where is None:
        _, where = _candidates(logits)
    top = jnp.take_along_axis(order, where, axis=-1)
    probs = jax.nn.softmax(logits, axis=-1)
    top_probs = jnp.take_along_axis(probs, where, axis=-1)
    return (order >= _smallest_kept(order, top, probs, top_probs, p)[:, None]) | (p[:, None] >= 1.0)


def _sortable(x: jax.Array) -> jax.Array:
    """float32 -> int32 in the same order (the sign-magnitude bits made two's complement)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _candidates(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The largest values of each row of `x` (float32 `[rows, vocab]`) as `_sortable`s, largest first, and their
    indices: `[rows, min(CANDIDATES, vocab)]` each. (XLA:CPU's top-k of int32 rows ran 70x slower than of floats.)"""
    values, indices = jax.lax.top_k(x, min(CANDIDATES, x.shape[-1]))
    return _sortable(values), indices


def _smallest_kept(
    order: jax.Array,  # [rows, vocab] int32
    top: jax.Array,  # [rows, candidates] int32: order's largest, largest first
    weights: jax.Array,  # [rows, vocab]
    top_weights: jax.Array,  # [rows, candidates]: the weights of `top`
    bound: jax.Array,  # [rows]
) -> jax.Array:
    """Per row the smallest `t` with `sum(weights[order > t]) < bound`, by bisection over the int32 values: exact
    in 32 steps of one masked sum each. Where the candidates' weight reaches `bound`, `t` lies in
    `[top[-1], max]` and only candidates are above any `t` there, so the sums run over the candidates; the rows
    where it does not (a flat distribution) run over the whole vocabulary, and only when some row needs it."""

    def bisect(order, weights, lo):
        def halve(_, bounds):
            lo, hi = bounds  # weight above lo >= bound > weight above hi
            mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
            above = jnp.sum(jnp.where(order > mid[:, None], weights, 0.0), axis=-1)
            return jnp.where(above < bound, lo, mid), jnp.where(above < bound, mid, hi)

        return jax.lax.fori_loop(0, 32, halve, (lo, top[:, 0]))[1]

    floor = top[:, -1]
    covered = jnp.sum(top_weights, axis=-1) >= bound  # then the weight above floor - 1 >= bound too
    fast = bisect(top, top_weights, jnp.where(covered, floor - 1, floor))  # (floor - 1 >= int32 min: finite floats)
    lowest = jnp.full_like(floor, jnp.iinfo(jnp.int32).min)
    full = jax.lax.cond(jnp.all(covered), lambda: fast, lambda: bisect(order, weights, lowest))
    return jnp.where(covered, fast, full)
