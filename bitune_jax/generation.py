"""Batched decoding with a KV cache: prefill once, then one token per step until EOS or the budget."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, Params, forward
from bitune_jax.sampling import SamplingConfig, sample_token


class Batch(NamedTuple):
    tokens: np.ndarray  # [batch, seq] int32, padding filled with pad_id
    positions: np.ndarray  # [batch, seq] int32, -1 marks padding


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0,
              side: Literal["left", "right"] = "left") -> Batch:
    """Pad token lists into one batch; positions count each sequence's own tokens from 0."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence in the batch needs at least one token")
    width = max(len(s) for s in sequences)
    tokens = np.full((len(sequences), width), pad_id, np.int32)
    positions = np.full((len(sequences), width), -1, np.int32)
    for i, s in enumerate(sequences):
        start = width - len(s) if side == "left" else 0
        tokens[i, start:start + len(s)] = s
        positions[i, start:start + len(s)] = np.arange(len(s))
    return Batch(tokens, positions)


class Generated(NamedTuple):
    tokens: jax.Array  # [batch, max_new_tokens] int32, pad_id after the end
    lengths: jax.Array  # [batch] int32, tokens generated (EOS included)
    finished: jax.Array  # [batch] bool, stopped at EOS


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "sampling", "eos_ids", "pad_id", "dtype",
                                             "attn_impl"))
def generate_tokens(
    params: Params,
    tokens: jax.Array,  # [batch, seq] int32
    positions: jax.Array,  # [batch, seq] int32, -1 for padding (left or right)
    key: jax.Array,
    *,
    cfg: ModelConfig,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    eos_ids: tuple[int, ...] = (),
    pad_id: int = 0,
    dtype=jnp.float32,
    attn_impl: str = "xla",
) -> Generated:
    batch, seq = tokens.shape
    cache = KVCache.init(cfg, batch, seq + max_new_tokens, dtype)
    logits, cache = forward(params, tokens, cfg, positions=positions, cache=cache, dtype=dtype, attn_impl=attn_impl)
    last = jnp.argmax(positions, axis=1)  # the last real token of each row, whatever the padding side
    next_logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
    next_pos = jnp.max(positions, axis=1) + 1
    eos = jnp.asarray(eos_ids or (-1,), jnp.int32)

    def step(state):
        i, cache, next_logits, next_pos, done, out, key = state
        key, sub = jax.random.split(key)
        token = sample_token(next_logits, sub, sampling)
        token = jnp.where(done, pad_id, token)
        out = out.at[:, i].set(token)
        done = done | jnp.isin(token, eos)
        logits, cache = forward(params, token[:, None], cfg, positions=next_pos[:, None], cache=cache, dtype=dtype,
                                attn_impl=attn_impl)
        return i + 1, cache, logits[:, 0], next_pos + 1, done, out, key

    def keep_going(state):
        i, *_, done, _, _ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
    done = jnp.zeros((batch,), bool)
    state = (jnp.int32(0), cache, next_logits, next_pos, done, out, key)
    _, _, _, _, done, out, _ = jax.lax.while_loop(keep_going, step, state)
    is_eos = jnp.isin(out, eos)
    first_eos = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1) + 1, max_new_tokens)
    return Generated(tokens=out, lengths=first_eos.astype(jnp.int32), finished=is_eos.any(1))
