"""One config-driven decoder for Llama, SmolLM2, Olmo3, Gemma and Qwen3."""

from bitune_jax.models.config import ModelConfig, RopeConfig
from bitune_jax.models.transformer import KVCache, forward, init_params

__all__ = ["KVCache", "ModelConfig", "RopeConfig", "forward", "init_params"]
