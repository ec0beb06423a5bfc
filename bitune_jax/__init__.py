"""bitune_jax: Bitune and repetition SFT on one config-driven JAX decoder."""

from bitune_jax import chat
from bitune_jax.api import LM, load
from bitune_jax.models import presets
from bitune_jax.models.config import ModelConfig, RopeConfig
from bitune_jax.sampling import SamplingConfig

__all__ = ["LM", "chat", "ModelConfig", "RopeConfig", "SamplingConfig", "load", "presets"]
__version__ = "0.1.0"
