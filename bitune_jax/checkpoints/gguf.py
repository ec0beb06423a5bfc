"""GGUF files (llama.cpp) -> `ModelConfig` and parameter pytree (the vocabulary: `gguf_tokenizer`).

Every tensor is dequantized to float32 with `gguf.quants.dequantize`, renamed to its Hugging Face name and
handed to `hf.params_from_tensors`, which stacks the layers and checks every shape. Two layout changes
llama.cpp's converter makes are undone on the way:
- arch `llama`: the rows of Q and K are permuted per head for llama.cpp's interleaved RoPE;
- Gemma (`gemma`, `gemma3`): RMSNorm weights are stored as `1 + w`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np
from gguf.quants import dequantize

from bitune_jax.checkpoints.gguf_file import GEMMA_ARCHS, GGUFFile, eos_ids, field, open_gguf, required_field, source
from bitune_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from bitune_jax.checkpoints.hf import params_from_tensors
from bitune_jax.models.config import ModelConfig, RopeConfig, every_nth_global
from bitune_jax.models.transformer import Params
from bitune_jax.tokenizer import Tokenizer

SUPPORTED = ("llama", "qwen3", "gemma", "gemma3")

# GGUF tensor name (after `blk.{i}.`) -> HF name suffix (after `model.layers.{i}.`)
_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Norms: llama.cpp calls the pre-MLP norm `ffn_norm` whatever the layout; HF's names depend on it.
_LAYER_NORMS = {
    "pre": {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"},
    "sandwich": {
        "attn_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}


def _tensor_names(reader: GGUFFile) -> set[str]:
    return {t.name for t in reader.tensors}


def _rope(reader: GGUFFile, arch: str, default_theta: float) -> RopeConfig:
    theta = float(field(reader, f"{arch}.rope.freq_base", default_theta))
    kind = field(reader, f"{arch}.rope.scaling.type", "none")
    factor = float(field(reader, f"{arch}.rope.scaling.factor", 1.0) or 1.0)
    # as config_from_hf: the original context defaults to the model's own
    orig = int(
        field(reader, f"{arch}.rope.scaling.original_context_length") or field(reader, f"{arch}.context_length", 8192)
    )
    if kind in ("none", None) or factor == 1.0:
        return RopeConfig(theta=theta, original_max_position_embeddings=orig)
    if kind in ("linear", "yarn"):
        return RopeConfig(theta=theta, kind=kind, factor=factor, original_max_position_embeddings=orig)
    raise ValueError(f"{source(reader)}: unsupported {arch}.rope.scaling.type {kind!r} (supported: linear, yarn)")


def config_from_gguf(reader: GGUFFile) -> ModelConfig:
    """The `ModelConfig` a GGUF file describes; mirrors `hf_config.config_from_hf` family by family."""
    where = source(reader)
    arch = field(reader, "general.architecture")
    if arch not in SUPPORTED:
        raise ValueError(f"{where}: unsupported GGUF architecture {arch!r}; supported: {', '.join(SUPPORTED)}")
    names = _tensor_names(reader)
    if "rope_freqs.weight" in names:
        raise ValueError(
            f"{where}: per-frequency RoPE factors (tensor rope_freqs.weight, e.g. Llama 3.1 scaling) are not supported"
        )
    if any(n.endswith(".bias") for n in names):
        raise ValueError(f"{where}: bias tensors are not supported")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise KeyError(f"{where}: no token_embd.weight tensor; is this a decoder LM?")
    dim, heads = (
        int(required_field(reader, f"{arch}.embedding_length")),
        int(required_field(reader, f"{arch}.attention.head_count")),
    )
    head_dim = int(field(reader, f"{arch}.attention.key_length") or dim // heads)
    value_dim = int(field(reader, f"{arch}.attention.value_length") or head_dim)
    if value_dim != head_dim:
        raise ValueError(f"{where}: attention.value_length {value_dim} != key_length {head_dim} is not supported")
    rot = field(reader, f"{arch}.rope.dimension_count")
    if rot is not None and int(rot) != head_dim:
        raise ValueError(
            f"{where}: partial RoPE ({arch}.rope.dimension_count={rot}, head_dim={head_dim}) is not supported"
        )
    common = dict(
        vocab_size=int(embd.shape[1]),  # ggml order: [dim, vocab]
        dim=dim,
        num_layers=int(required_field(reader, f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(field(reader, f"{arch}.attention.head_count_kv") or heads),
        head_dim=head_dim,
        mlp_dim=int(required_field(reader, f"{arch}.feed_forward_length")),
        norm_eps=float(field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings="output.weight" not in names,  # llama.cpp writes no output tensor when tied
        max_seq_len=int(field(reader, f"{arch}.context_length", 8192)),
        bos_id=field(reader, "tokenizer.ggml.bos_token_id"),
        eos_ids=eos_ids(reader),
        pad_id=field(reader, "tokenizer.ggml.padding_token_id"),
    )
    if arch == "llama":
        return ModelConfig(family="llama", rope=_rope(reader, arch, 10000.0), **common)
    if arch == "qwen3":
        return ModelConfig(family="qwen3", qk_norm="per_head", rope=_rope(reader, arch, 10000.0), **common)
    gemma = dict(norm_plus_one=True, embed_scale=True, mlp_activation="gelu_tanh")
    if arch == "gemma":
        return ModelConfig(family="gemma", rope=_rope(reader, arch, 10000.0), **gemma, **common)
    # gemma3, as llama.cpp's loader reads it: with a window, 5 sliding layers then 1 global, local RoPE base 1e4
    # unscaled; query scale 1/sqrt(head_dim) except 27B (62 layers), which uses 1/sqrt(dim / heads).
    window = field(reader, f"{arch}.attention.sliding_window")
    kinds, local = (), None
    if window:
        pattern = field(reader, f"{arch}.attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):  # per layer, True = sliding
            kinds = tuple("sliding" if p else "global" for p in pattern)
        else:
            kinds = every_nth_global(common["num_layers"], int(pattern))
        local = RopeConfig(theta=10000.0, original_max_position_embeddings=common["max_seq_len"])
    scalar = dim // heads if common["num_layers"] == 62 else head_dim
    return ModelConfig(
        family="gemma3",
        norm_layout="sandwich",
        qk_norm="per_head",
        attn_scale=float(scalar) ** -0.5,
        attn_logit_softcap=field(reader, f"{arch}.attn_logit_softcapping"),
        final_logit_softcap=field(reader, f"{arch}.final_logit_softcapping"),
        rope=_rope(reader, arch, 1_000_000.0),
        rope_local=local,
        sliding_window=int(window) if window else None,
        layer_kinds=kinds,
        **gemma,
        **common,
    )


def _unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of Q/K rows ([out, in]): per head, interleaved pairs back to two halves."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_names(cfg: ModelConfig) -> dict[str, str]:
    """HF tensor name -> GGUF tensor name, for every tensor the config needs."""
    out = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = "output.weight"
    if cfg.norm_layout not in _LAYER_NORMS:
        raise ValueError(f"no GGUF tensor names for norm_layout {cfg.norm_layout!r}")
    layer = {**_LAYER_TENSORS, **_LAYER_NORMS[cfg.norm_layout]}
    for i in range(cfg.num_layers):
        for gguf_name, hf_name in layer.items():
            out[f"model.layers.{i}.{hf_name}.weight"] = f"blk.{i}.{gguf_name}.weight"
    return out


def _tensor_getter(reader: GGUFFile, cfg: ModelConfig) -> tuple[Callable, Callable, set[str]]:
    """`get(hf_name)`, `has(hf_name)` over the file's tensors in HF layout, and the GGUF names they read."""
    tensors = {t.name: t for t in reader.tensors}
    hf_to_gguf = _hf_names(cfg)
    used: set[str] = set()
    llama = field(reader, "general.architecture") == "llama"
    gemma = cfg.family in GEMMA_ARCHS

    def has(hf_name: str) -> bool:
        return hf_to_gguf.get(hf_name) in tensors

    def get(hf_name: str) -> np.ndarray:
        name = hf_to_gguf[hf_name]
        t = tensors[name]
        used.add(name)
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)  # numpy order = HF [out, in]
        if llama and ".attn_q." in name:
            w = _unpermute_rows(w, cfg.num_heads)
        elif llama and ".attn_k." in name:
            w = _unpermute_rows(w, cfg.num_kv_heads)
        if gemma and name.endswith("norm.weight"):
            w = w - 1.0  # llama.cpp stores Gemma's (1 + w) scale; ModelConfig.norm_plus_one adds the 1 back
        return w

    return get, has, used


def load_gguf(path: str | pathlib.Path, dtype=np.float32) -> tuple[ModelConfig, Params]:
    """Config and parameters (NumPy arrays of `dtype`, every tensor dequantized) of a GGUF file."""
    return _load(open_gguf(path), dtype)


def _load(reader: GGUFFile, dtype) -> tuple[ModelConfig, Params]:
    cfg = config_from_gguf(reader)
    get, has, used = _tensor_getter(reader, cfg)
    params = params_from_tensors(get, has, cfg, "model.", source(reader), dtype)
    left = sorted(_tensor_names(reader) - used)
    if left:
        raise ValueError(
            f"{source(reader)}: tensors this loader does not know how to use: {left[:8]}"
            f"{' ...' if len(left) > 8 else ''}"
        )
    return cfg, params


def load_gguf_model(path: str | pathlib.Path, dtype=np.float32) -> tuple[ModelConfig, Params, Tokenizer | None]:
    """Config, parameters and tokenizer from one GGUF file (tokenizer None when the file has no vocabulary)."""
    reader = open_gguf(path)
    cfg, params = _load(reader, dtype)
    tok = tokenizer_from_gguf(reader) if "tokenizer.ggml.model" in reader.fields else None
    return cfg, params, tok
