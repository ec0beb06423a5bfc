"""How a forward runs, kept apart from what it computes: one frozen value instead of five threaded keywords.

`Compute` is static under `jax.jit` (hashable), so a jitted function takes it whole as a static argument and one
value decides the activation dtype, the attention implementation, the remat policy, the loss chunk and the
sequence-parallel layout everywhere below it (decoder, Bitune streams, objectives, generation, evals).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from bitune_jax import kernels

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # the names configs and loaders give dtypes

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs, recompute the rest
}


@dataclasses.dataclass(frozen=True)
class Compute:
    dtype: Any = jnp.float32  # activations and matmuls; logits and losses are always float32
    attn_impl: str = "xla"  # kernels.IMPLS: xla, blockwise, pallas, auto
    remat: str = "none"  # REMAT_POLICIES: what a layer keeps for the backward pass
    loss_chunk: int = 0  # >0: unembed and score this many rows at a time (long sequences, large vocabularies)
    sequence_parallel: kernels.SequenceParallel | None = None  # tokens of each row split over a mesh axis

    def __post_init__(self):
        if self.attn_impl not in kernels.IMPLS:
            raise ValueError(f"unknown attention implementation {self.attn_impl!r}; choose from {kernels.IMPLS}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {self.remat!r}; choose from {sorted(REMAT_POLICIES)}")
        if self.loss_chunk < 0:
            raise ValueError(f"loss_chunk must be >= 0, got {self.loss_chunk}")

    def constrain(self, x: jax.Array) -> jax.Array:
        """`[batch, seq, ...]` activations pinned to the sequence-parallel layout (unchanged without one)."""
        return x if self.sequence_parallel is None else self.sequence_parallel.constrain(x)

    def attention(self, q, k, v, **kwargs) -> jax.Array:
        """`kernels.attention` with this setting's implementation and layout."""
        return kernels.attention(q, k, v, impl=self.attn_impl, sequence_parallel=self.sequence_parallel, **kwargs)

    def checkpointed(self, body):
        """A scanned layer body wrapped in `jax.checkpoint` with the remat policy (as is for "none")."""
        return body if self.remat == "none" else jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
