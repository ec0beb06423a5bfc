"""One config for every decoder family: Llama, SmolLM2, Olmo3, Gemma (1 and 3) and Qwen3.

Families differ by the fields below (norm placement, QK-norm, sliding-window pattern, tied embeddings,
activation, embedding scale, RoPE scaling), never by copied model code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

NormLayout = Literal["pre", "post", "sandwich"]
QKNorm = Literal["none", "per_head", "full"]
LayerKind = Literal["global", "sliding"]


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """RoPE for one kind of layer. `kind` follows Hugging Face's `rope_type` names."""

    theta: float = 10000.0
    kind: Literal["default", "linear", "llama3", "yarn"] = "default"
    factor: float = 1.0
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer, described as data."""

    family: str  # "llama", "olmo3", "gemma", "gemma3", "qwen3": names the HF layout used for export
    vocab_size: int
    dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    norm_eps: float = 1e-5
    norm_layout: NormLayout = "pre"
    norm_plus_one: bool = False  # Gemma: RMSNorm scales by (1 + w)
    qk_norm: QKNorm = "none"
    mlp_activation: Literal["silu", "gelu_tanh"] = "silu"
    tie_embeddings: bool = True
    embed_scale: bool = False  # Gemma: multiply embeddings by sqrt(dim)
    attn_scale: float | None = None  # default head_dim ** -0.5 (Gemma3: query_pre_attn_scalar ** -0.5)
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    rope: RopeConfig = RopeConfig()
    rope_local: RopeConfig | None = None  # RoPE of sliding layers when it differs from `rope`
    sliding_window: int | None = None
    layer_kinds: tuple[LayerKind, ...] = ()  # empty: every layer global
    max_seq_len: int = 8192
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int | None = None

    def __post_init__(self):
        if self.layer_kinds and len(self.layer_kinds) != self.num_layers:
            raise ValueError(f"layer_kinds has {len(self.layer_kinds)} entries but num_layers is {self.num_layers}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if "sliding" in self.layer_kinds and not self.sliding_window:
            raise ValueError("layer_kinds has sliding layers but sliding_window is not set")

    @property
    def kinds(self) -> tuple[LayerKind, ...]:
        return self.layer_kinds or ("global",) * self.num_layers

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.head_dim**-0.5

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        d, f, h, k, e = self.dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
        per_layer = d * h * e * 2 + d * k * e * 2 + 3 * d * f
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.num_layers * per_layer + self.vocab_size * d + head


def every_nth_global(num_layers: int, n: int) -> tuple[LayerKind, ...]:
    """Sliding layers with every n-th layer global (Olmo3: n=4, Gemma3: n=6)."""
    return tuple("global" if (i + 1) % n == 0 else "sliding" for i in range(num_layers))
