"""Bitune: the prompt read causally and bidirectionally, the two KV caches mixed with trainable weights."""

from bitune_jax.bitune.config import BituneConfig
from bitune_jax.bitune.forward import (
    bitune_logits,
    bitune_loss,
    bitune_streams,
    init_trainable,
)
from bitune_jax.bitune.generation import bitune_generate, prefill
from bitune_jax.bitune.mixing import alpha, init_mixing, mix

__all__ = [
    "BituneConfig",
    "alpha",
    "bitune_generate",
    "bitune_logits",
    "bitune_loss",
    "bitune_streams",
    "init_mixing",
    "init_trainable",
    "mix",
    "prefill",
]
