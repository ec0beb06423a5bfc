"""Generation from the mixed cache (docs/method.md B, step 5): both prompt streams prefilled once, the caches mixed,
then ordinary causal decoding with the `causal` adapters."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.bitune.config import BituneConfig
from bitune_jax.bitune.forward import adapter_set, bitune_streams
from bitune_jax.generation import Generated, decode_loop
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, Params, forward
from bitune_jax.sampling import SamplingConfig


def split_prompts(prompts: Sequence[Sequence[int]], pad_id: int, max_len: int, max_new_tokens: int):
    """Left-padded `prompt[:-1]` rows with their positions, and each prompt's last token and its position."""
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty (Bitune needs at least one prompt token)")
        if len(p) + max_new_tokens > max_len:
            raise ValueError(
                f"prompt {i}: {len(p)} tokens + max_new_tokens={max_new_tokens} exceed the context of {max_len}"
            )
    width = max(1, max(len(p) - 1 for p in prompts))
    head = np.full((len(prompts), width), pad_id, np.int32)
    head_pos = np.full((len(prompts), width), -1, np.int32)
    for i, p in enumerate(prompts):
        n = len(p) - 1
        if n:
            head[i, width - n :] = p[:-1]
            head_pos[i, width - n :] = np.arange(n)
    last = np.asarray([p[-1] for p in prompts], np.int32)
    last_pos = np.asarray([len(p) - 1 for p in prompts], np.int32)
    return head, head_pos, last, last_pos


def prefill(
    base: Params,
    trainable: Params,
    head,
    head_pos,
    last,
    last_pos,
    cfg: ModelConfig,
    bcfg: BituneConfig,
    *,
    cache_len: int,
    compute: Compute = Compute(),
) -> tuple[jax.Array, KVCache]:
    """Mixed prompt cache, then the last prompt token through it: logits `[batch, vocab]` for the first answer
    token (equal to the training forward's logits at position P - 1) and the cache to decode from."""
    batch, width = head.shape
    _, (k_m, v_m) = bitune_streams(
        base, trainable, head, head_pos, last_pos, cfg, bcfg, compute=compute, return_mixed_cache=True
    )
    cache = KVCache.init(cfg, batch, cache_len, compute.dtype)
    cache = KVCache(
        k=cache.k.at[:, :, :, :width].set(jnp.swapaxes(k_m, 2, 3)),  # [layers, batch, width, kv_heads, head_dim]
        v=cache.v.at[:, :, :, :width].set(jnp.swapaxes(v_m, 2, 3)),
        positions=cache.positions.at[:, :width].set(head_pos),
        length=jnp.int32(width),
    )
    logits, cache = forward(
        base,
        last[:, None],
        cfg,
        positions=last_pos[:, None],
        cache=cache,
        adapters=adapter_set(trainable, "causal"),
        peft=bcfg.peft,
        compute=compute,
    )
    return logits[:, 0], cache


@functools.partial(
    jax.jit, static_argnames=("cfg", "bcfg", "max_new_tokens", "sampling", "eos_ids", "pad_id", "compute")
)
def _generate(
    base,
    trainable,
    head,
    head_pos,
    last,
    last_pos,
    key,
    *,
    cfg,
    bcfg,
    max_new_tokens,
    sampling,
    eos_ids,
    pad_id,
    compute,
) -> Generated:
    cache_len = head.shape[1] + 1 + max_new_tokens
    logits, cache = prefill(
        base,
        trainable,
        head,
        head_pos,
        last,
        last_pos,
        cfg,
        bcfg,
        cache_len=cache_len,
        compute=compute,
    )
    causal = adapter_set(trainable, "causal")

    def step(token, pos, cache):
        logits, cache = forward(
            base,
            token[:, None],
            cfg,
            positions=pos[:, None],
            cache=cache,
            adapters=causal,
            peft=bcfg.peft,
            compute=compute,
        )
        return logits[:, 0], cache

    return decode_loop(
        step,
        cache,
        logits,
        last_pos + 1,
        key,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        eos_ids=eos_ids,
        pad_id=pad_id,
    )


def bitune_generate(
    base: Params,
    trainable: Params,
    prompts: Sequence[Sequence[int]],
    cfg: ModelConfig,
    bcfg: BituneConfig,
    *,
    max_new_tokens: int = 64,
    sampling: SamplingConfig = SamplingConfig(),
    eos_ids: tuple[int, ...] = (),
    pad_id: int = 0,
    seed: int = 0,
    compute: Compute = Compute(),
) -> list[list[int]]:
    """Continue each prompt (token ids, different lengths allowed); each continuation ends at its EOS."""
    head, head_pos, last, last_pos = split_prompts(prompts, pad_id, cfg.max_seq_len, max_new_tokens)
    out = _generate(
        base,
        trainable,
        head,
        head_pos,
        last,
        last_pos,
        jax.random.key(seed),
        cfg=cfg,
        bcfg=bcfg,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        eos_ids=tuple(eos_ids),
        pad_id=pad_id,
        compute=compute,
    )
    return out.rows(len(prompts))
