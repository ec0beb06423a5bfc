"""What the engine decodes: a plain (or PEFT) model, or Bitune from its mixed prompt cache. Each decoder has the
same three pure functions, prefill a prompt, the weights its decode step reads, and one decode step, so the slots
and the scheduler do not know which they run.

The prefill runs the layers as one scan over the stacked weights; the decode step runs them unrolled over per-layer
weights and a layered cache (`unstack_layers`), so that no step copies a layer's weights or cache out of a stacked
array (SmolLM2, 16 slots: 135 -> 108 ms a step on a 2-core CPU)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from bitune_jax.bitune.config import BituneConfig
from bitune_jax.bitune.forward import adapter_set
from bitune_jax.bitune.generation import prefill as bitune_prefill
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, forward, unstack_layers
from bitune_jax.peft import PeftConfig

Weights = Any  # the pytree a decoder reads: (params, adapters) or (base, trainable)


@dataclasses.dataclass(frozen=True)
class PlainDecoder:
    """A plain model, or one with unmerged PEFT adapters. Weights: `(params, adapters or None)`."""

    cfg: ModelConfig
    peft: PeftConfig | None = None
    compute: Compute = Compute()
    min_width = 1  # prefill columns a prompt needs

    def prefill(self, weights: Weights, tokens: jax.Array, positions: jax.Array) -> tuple[jax.Array, KVCache]:
        """Left-padded prompts `[batch, width]` -> next-token logits `[batch, vocab]` and their cache of `width`."""
        params, adapters = weights
        batch, width = tokens.shape
        cache = KVCache.init(self.cfg, batch, width, self.compute.dtype)
        logits, cache = forward(
            params,
            tokens,
            self.cfg,
            positions=positions,
            cache=cache,
            adapters=adapters,
            peft=self.peft,
            compute=self.compute,
            logit_rows=jnp.full((batch, 1), width - 1, jnp.int32),
        )
        return logits[:, 0], cache

    def step_weights(self, weights: Weights) -> Weights:
        """What `step` reads: the weights and adapters one layer at a time (a copy)."""
        params, adapters = weights
        return unstack_layers(params), unstack_layers(adapters)

    def step(self, weights: Weights, token, pos, cache: KVCache, window: int) -> tuple[jax.Array, KVCache]:
        """One token a row `[batch]` at `pos`, attending over the layered cache's first `window` slots; `weights`
        are `step_weights(...)`'s."""
        params, adapters = weights
        logits, cache = forward(
            params,
            token[:, None],
            self.cfg,
            positions=pos[:, None],
            cache=cache,
            adapters=adapters,
            peft=self.peft,
            compute=self.compute,
            kv_window=window,
        )
        return logits[:, 0], cache


@dataclasses.dataclass(frozen=True)
class BituneDecoder:
    """Bitune (docs/method.md B, step 5): the mixed prompt cache, built once per prompt from both adapter sets,
    then causal decoding with the `causal` set. Weights: `(base, trainable)`."""

    cfg: ModelConfig
    bcfg: BituneConfig
    compute: Compute = Compute()
    min_width = 2  # the prompt minus its last token is the bidirectional head: one column at least, padding or not

    def prefill(self, weights: Weights, tokens: jax.Array, positions: jax.Array) -> tuple[jax.Array, KVCache]:
        base, trainable = weights
        width = tokens.shape[1]
        return bitune_prefill(
            base,
            trainable,
            tokens[:, :-1],
            positions[:, :-1],
            tokens[:, -1],
            positions[:, -1],
            self.cfg,
            self.bcfg,
            cache_len=width,
            compute=self.compute,
        )

    def step_weights(self, weights: Weights) -> Weights:
        """The base weights and the `causal` adapter set, one layer at a time: answers are decoded causally."""
        base, trainable = weights
        return self._causal.step_weights((base, adapter_set(trainable, "causal")))

    def step(self, weights: Weights, token, pos, cache: KVCache, window: int) -> tuple[jax.Array, KVCache]:
        return self._causal.step(weights, token, pos, cache, window)

    @property
    def _causal(self) -> PlainDecoder:
        return PlainDecoder(self.cfg, self.bcfg.peft, self.compute)


Decoder = PlainDecoder | BituneDecoder
