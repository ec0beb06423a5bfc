"""Batched decoding with a KV cache: prefill once, then one token per step until EOS or the budget."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, Params, forward
from bitune_jax.peft import PeftConfig
from bitune_jax.sampling import SamplingConfig, sample_token


class Generated(NamedTuple):
    tokens: jax.Array  # [batch, max_new_tokens] int32, pad_id after the end
    lengths: jax.Array  # [batch] int32, tokens generated (EOS included)
    finished: jax.Array  # [batch] bool, stopped at EOS

    def rows(self, n: int | None = None) -> list[list[int]]:
        """The first `n` rows' generated ids (each cut at its own length), on the host."""
        tokens, lengths = np.asarray(self.tokens), np.asarray(self.lengths)
        return [tokens[i, : lengths[i]].tolist() for i in range(len(lengths) if n is None else n)]


def decode_loop(
    step,  # (token [batch], position [batch], cache) -> (logits [batch, vocab], cache)
    cache,
    next_logits: jax.Array,  # [batch, vocab] logits for the first new token
    next_pos: jax.Array,  # [batch] int32 position of the first new token
    key: jax.Array,
    *,
    max_new_tokens: int,
    sampling: SamplingConfig,
    eos_ids: tuple[int, ...],
    pad_id: int,
) -> Generated:
    """Sample, feed back, repeat: stops when every row has produced EOS or the budget is spent."""
    batch = next_logits.shape[0]
    eos = jnp.asarray(eos_ids or (-1,), jnp.int32)

    def body(state):
        i, cache, logits, pos, done, out, key = state
        key, sub = jax.random.split(key)
        token = jnp.where(done, pad_id, sample_token(logits, sub, sampling))
        out = out.at[:, i].set(token)
        done = done | jnp.isin(token, eos)
        logits, cache = step(token, pos, cache)
        return i + 1, cache, logits, pos + 1, done, out, key

    def keep_going(state):
        i, *_, done, _, _ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
    state = (jnp.int32(0), cache, next_logits, next_pos, jnp.zeros((batch,), bool), out, key)
    out = jax.lax.while_loop(keep_going, body, state)[5]
    is_eos = jnp.isin(out, eos)
    lengths = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1) + 1, max_new_tokens)
    return Generated(tokens=out, lengths=lengths.astype(jnp.int32), finished=is_eos.any(1))


def last_real_row(positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each row's last real slot `[batch]` (either padding side) and the position that follows it."""
    return jnp.argmax(positions, axis=1), jnp.max(positions, axis=1) + 1


@functools.partial(
    jax.jit, static_argnames=("cfg", "max_new_tokens", "sampling", "eos_ids", "pad_id", "compute", "peft")
)
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
    compute: Compute = Compute(),
    adapters: Params | None = None,
    peft: PeftConfig | None = None,
) -> Generated:
    batch, seq = tokens.shape
    run = functools.partial(forward, params, cfg=cfg, adapters=adapters, peft=peft, compute=compute)
    cache = KVCache.init(cfg, batch, seq + max_new_tokens, compute.dtype)
    last, next_pos = last_real_row(positions)
    logits, cache = run(tokens, positions=positions, cache=cache, logit_rows=last[:, None])  # the prompt's last row
    next_logits = logits[:, 0]

    def step(token, pos, cache):
        logits, cache = run(token[:, None], positions=pos[:, None], cache=cache)
        return logits[:, 0], cache

    return decode_loop(
        step,
        cache,
        next_logits,
        next_pos,
        key,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        eos_ids=eos_ids,
        pad_id=pad_id,
    )
