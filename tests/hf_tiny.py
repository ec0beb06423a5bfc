"""Tiny random Hugging Face models of every family, written with `save_pretrained` by the tests."""

from __future__ import annotations

import pathlib

import torch
import transformers

COMMON = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def tiny_configs() -> dict[str, transformers.PretrainedConfig]:
    return {
        "llama": transformers.LlamaConfig(**COMMON, tie_word_embeddings=False, rms_norm_eps=1e-5),
        "llama3_tied": transformers.LlamaConfig(
            **COMMON,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
        "olmo3": transformers.Olmo3Config(
            **COMMON,
            tie_word_embeddings=False,
            sliding_window=5,
            rope_parameters={
                "full_attention": dict(
                    rope_type="yarn",
                    rope_theta=500000.0,
                    factor=8.0,
                    beta_fast=32,
                    beta_slow=1,
                    original_max_position_embeddings=32,
                    attention_factor=1.2,
                ),
                "sliding_attention": dict(rope_type="default", rope_theta=500000.0),
            },
        ),
        "gemma3": transformers.Gemma3TextConfig(
            **COMMON,
            sliding_window=5,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "full_attention": dict(rope_type="linear", rope_theta=1_000_000.0, factor=8.0),
                "sliding_attention": dict(rope_type="default", rope_theta=10_000.0),
            },
        ),
        "gemma": transformers.GemmaConfig(**COMMON, hidden_activation="gelu_pytorch_tanh"),
        "qwen3": transformers.Qwen3Config(**COMMON, tie_word_embeddings=True),
    }


def write_tiny(name: str, directory: pathlib.Path, seed: int = 0) -> transformers.PreTrainedModel:
    """Build a random model of family `name`, perturb its norms (so a wrong norm layout shows), save it."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_configs()[name], dtype=torch.float32).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(directory)
    return model
