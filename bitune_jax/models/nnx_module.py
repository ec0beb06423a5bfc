"""The decoder as a small Flax NNX module, for projects built on `nnx` (optimizers, `nnx.jit`, `nnx.split`).

The module only holds the parameter pytree (as `nnx.Param`s) and the config; the computation is the pure
`transformer.forward`, so NNX and functional users run the same code and the same checkpoints.
"""

from __future__ import annotations

import jax
from flax import nnx

from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, Params, forward, init_params


class DecoderLM(nnx.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        params: Params | None = None,
        *,
        rngs: nnx.Rngs | None = None,
        compute: Compute = Compute(),
    ):
        if params is None:
            if rngs is None:
                raise ValueError("DecoderLM needs either `params` (e.g. from bj.load) or `rngs` to initialize them")
            params = init_params(cfg, rngs.params())
        self.cfg = cfg
        self.compute = compute
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    def __call__(
        self, tokens: jax.Array, positions: jax.Array | None = None, cache: KVCache | None = None
    ) -> tuple[jax.Array, KVCache | None]:
        """Logits `[batch, seq, vocab]` (float32) and the updated cache, as `transformer.forward`."""
        params = jax.tree.map(lambda p: p[...], self.params, is_leaf=lambda x: isinstance(x, nnx.Param))
        return forward(params, tokens, self.cfg, positions=positions, cache=cache, compute=self.compute)

    @classmethod
    def from_lm(cls, lm) -> DecoderLM:
        """Wrap a loaded `bitune_jax.LM` (its weights, not a copy)."""
        return cls(lm.cfg, lm.params, compute=lm.compute)
