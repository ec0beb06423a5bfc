"""The device side: every slot's cache and decoding state, and the jitted pure functions over them (prefill a prompt,
insert it into a slot, release a slot, decode a chunk of steps for all slots). Token `j` of a sample is drawn with
`fold_in(fold_in(key(seed), sample), j)`, so a sample does not depend on its slot or its neighbours."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bitune_jax.engine.decoders import Decoder, Weights
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache
from bitune_jax.sampling import sample_rows


class Slots(NamedTuple):
    """Every slot's cache and decoding state; a slot is free when not `active`."""

    cache: KVCache  # layered; length [slots]: the next cache index each slot writes
    token: jax.Array  # [slots] int32: sampled, not yet emitted
    pos: jax.Array  # [slots] int32: that token's position
    count: jax.Array  # [slots] int32: tokens emitted so far
    budget: jax.Array  # [slots] int32: max_new_tokens
    active: jax.Array  # [slots] bool
    key: jax.Array  # [slots, 2] uint32: the sample's key data
    temperature: jax.Array  # [slots] float32
    top_p: jax.Array  # [slots] float32
    top_k: jax.Array  # [slots] int32
    eos: jax.Array  # [slots, eos_width] int32, -1 padded

    @classmethod
    def init(cls, cfg: ModelConfig, slots: int, max_len: int, dtype, eos_width: int) -> Slots:
        cache = KVCache.init(cfg, slots, max_len, dtype, layered=True)

        def zeros():  # one buffer each: the state is donated, and a buffer cannot be donated twice
            return jnp.zeros((slots,), jnp.int32)

        return cls(
            cache=cache._replace(length=zeros()),
            token=zeros(),
            pos=zeros(),
            count=zeros(),
            budget=zeros(),
            active=jnp.zeros((slots,), bool),
            key=jnp.zeros((slots, 2), jnp.uint32),
            temperature=jnp.zeros((slots,), jnp.float32),
            top_p=jnp.ones((slots,), jnp.float32),
            top_k=zeros(),
            eos=jnp.full((slots, eos_width), -1, jnp.int32),
        )


def slot_shardings(slots: Slots, mesh: jax.sharding.Mesh) -> Slots:
    """Slots over a mesh as the trainer lays out a batch and its weights: rows over `data` (and `fsdp`), the cache's
    key/value heads over `tensor` (where they divide), the rest replicated."""
    rows = tuple(a for a in ("data", "fsdp") if mesh.shape.get(a, 1) > 1) or None
    if rows is not None and slots.token.shape[0] % math.prod(mesh.shape[a] for a in rows):
        rows = None
    kv = slots.cache.k[0].shape[1]
    heads = "tensor" if mesh.shape.get("tensor", 1) > 1 and kv % mesh.shape["tensor"] == 0 else None

    def spec(*axes):
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*axes))

    per_row = spec(rows)
    layer = spec(rows, heads, None, None)
    cache = KVCache(
        k=(layer,) * len(slots.cache.k),
        v=(layer,) * len(slots.cache.v),
        positions=spec(rows, None),
        length=per_row,
    )
    return Slots(cache, *[spec(rows, None) if f in ("key", "eos") else per_row for f in Slots._fields[1:]])


def _draw(logits, key, index, temperature, top_p, top_k) -> jax.Array:
    """Token number `index` of each row `[rows]`, drawn with the row's own sample key data and settings."""
    keys = jax.vmap(lambda k, i: jax.random.fold_in(jax.random.wrap_key_data(k), i))(key, index)
    return sample_rows(logits, keys, temperature, top_p, top_k)


def _sample(slots: Slots, logits: jax.Array, index: jax.Array) -> jax.Array:
    """Each slot's token number `index` `[slots]`."""
    return _draw(logits, slots.key, index, slots.temperature, slots.top_p, slots.top_k)


@functools.partial(jax.jit, static_argnames=("decoder",))
def prefill(decoder: Decoder, weights: Weights, tokens: jax.Array, positions: jax.Array):
    """`[1, width]` left-padded prompt -> (next-token logits `[1, vocab]`, its cache)."""
    return decoder.prefill(weights, tokens, positions)


@functools.partial(jax.jit, static_argnames=("decoder",))
def step_weights(decoder: Decoder, weights: Weights) -> Weights:
    """The weights `decode` reads (a per-layer copy), laid out as jit propagates the given ones' shardings."""
    return decoder.step_weights(weights)


@functools.partial(jax.jit, donate_argnums=(0,))
def insert(
    slots: Slots,
    prompt: KVCache,  # stacked, batch 1, scalar length
    logits: jax.Array,  # [1, vocab]
    slot: jax.Array,  # [] int32
    key: jax.Array,  # [2] uint32 key data of this sample
    settings: tuple[jax.Array, ...],  # temperature, top_p, top_k, budget: [] each
    eos: jax.Array,  # [eos_width] int32
) -> Slots:
    """The prompt's cache copied into `slot`, its first token drawn: the slot is active from the next chunk."""
    temperature, top_p, top_k, budget = settings
    width = prompt.positions.shape[1]
    max_len = slots.cache.positions.shape[1]
    row = jnp.full((max_len,), -1, jnp.int32).at[:width].set(prompt.positions[0])
    cache = KVCache(
        k=tuple(c.at[slot, :, :width].set(prompt.k[i, 0]) for i, c in enumerate(slots.cache.k)),
        v=tuple(c.at[slot, :, :width].set(prompt.v[i, 0]) for i, c in enumerate(slots.cache.v)),
        positions=slots.cache.positions.at[slot].set(row),
        length=slots.cache.length.at[slot].set(prompt.length),
    )
    slots = slots._replace(
        cache=cache,
        pos=slots.pos.at[slot].set(jnp.max(prompt.positions) + 1),
        count=slots.count.at[slot].set(0),
        budget=slots.budget.at[slot].set(budget),
        active=slots.active.at[slot].set(True),
        key=slots.key.at[slot].set(key),
        temperature=slots.temperature.at[slot].set(temperature),
        top_p=slots.top_p.at[slot].set(top_p),
        top_k=slots.top_k.at[slot].set(top_k),
        eos=slots.eos.at[slot].set(eos),
    )
    first = _draw(logits, key[None], jnp.zeros((1,), jnp.int32), temperature[None], top_p[None], top_k[None])[0]
    return slots._replace(token=slots.token.at[slot].set(first))


@functools.partial(jax.jit, donate_argnums=(0,))
def release(slots: Slots, slot: jax.Array) -> Slots:
    """Stop a slot early (its sample met a stop string)."""
    return slots._replace(active=slots.active.at[slot].set(False))


@functools.partial(jax.jit, static_argnames=("decoder", "steps", "sampled", "window"), donate_argnums=(2,))
def decode(
    decoder: Decoder, weights: Weights, slots: Slots, *, steps: int, window: int, sampled: bool = True
) -> tuple[Slots, jax.Array]:
    """Up to `steps` decode steps for every slot (fewer once none is active): each active slot emits its token,
    stops at EOS or its budget, otherwise feeds it and draws the next (`sampled=False`: every slot is greedy, the
    draw is an argmax). `weights` are `decoder.step_weights(...)`'s. Attention reads the cache's first `window`
    slots: every slot's length + `steps` must fit.
    Returns `[slots, steps]` emitted ids, -1 where a slot emitted nothing."""
    out = jnp.full((slots.token.shape[0], steps), -1, jnp.int32)

    def body(carry):
        i, slots, out = carry
        emit = slots.active
        out = out.at[:, i].set(jnp.where(emit, slots.token, -1))
        count = slots.count + emit
        ended = jnp.any(slots.token[:, None] == slots.eos, axis=1) | (count >= slots.budget)
        active = emit & ~ended
        logits, cache = decoder.step(weights, slots.token, slots.pos, slots.cache, window)
        cache = cache._replace(length=jnp.where(active, cache.length, slots.cache.length))
        nxt = _sample(slots, logits, count) if sampled else jnp.argmax(logits, axis=-1).astype(jnp.int32)
        slots = slots._replace(
            cache=cache,
            token=jnp.where(active, nxt, slots.token),
            pos=slots.pos + active,
            count=count,
            active=active,
        )
        return i + 1, slots, out

    def keep_going(carry):
        i, slots, _ = carry
        return (i < steps) & jnp.any(slots.active)

    _, slots, out = jax.lax.while_loop(keep_going, body, (jnp.int32(0), slots, out))
    return slots, out
