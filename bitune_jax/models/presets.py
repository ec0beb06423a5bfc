"""Named configurations of published checkpoints (architecture only; weights come from local files)."""

from __future__ import annotations

from collections.abc import Callable

from bitune_jax.models.config import ModelConfig, RopeConfig, every_nth_global


def smollm2_135m_instruct() -> ModelConfig:
    return ModelConfig(
        family="llama",
        vocab_size=49152,
        dim=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        mlp_dim=1536,
        norm_eps=1e-5,
        rope=RopeConfig(theta=100000.0),
        tie_embeddings=True,
        max_seq_len=8192,
        bos_id=1,
        eos_ids=(2,),
        pad_id=2,
    )


def llama3_8b() -> ModelConfig:
    return ModelConfig(
        family="llama",
        vocab_size=128256,
        dim=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=14336,
        norm_eps=1e-5,
        rope=RopeConfig(theta=500000.0),
        tie_embeddings=False,
        max_seq_len=8192,
        bos_id=128000,
        eos_ids=(128001, 128009),
    )


def llama3_1_8b() -> ModelConfig:
    rope = RopeConfig(
        theta=500000.0,
        kind="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    )
    return llama3_8b().replace(rope=rope, max_seq_len=131072)


def olmo3_7b() -> ModelConfig:
    yarn = RopeConfig(
        theta=500000.0,
        kind="yarn",
        factor=8.0,
        original_max_position_embeddings=8192,
        attention_factor=1.2079441541679836,
    )
    return ModelConfig(
        family="olmo3",
        vocab_size=100278,
        dim=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        head_dim=128,
        mlp_dim=11008,
        norm_eps=1e-6,
        norm_layout="post",
        qk_norm="full",
        tie_embeddings=False,
        rope=yarn,
        rope_local=RopeConfig(theta=500000.0),
        sliding_window=4096,
        layer_kinds=every_nth_global(32, 4),
        max_seq_len=65536,
        eos_ids=(100257,),
        pad_id=100277,
    )


def gemma_2b() -> ModelConfig:
    return ModelConfig(
        family="gemma",
        vocab_size=256000,
        dim=2048,
        num_layers=18,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
        mlp_dim=16384,
        norm_eps=1e-6,
        norm_plus_one=True,
        embed_scale=True,
        mlp_activation="gelu_tanh",
        rope=RopeConfig(theta=10000.0),
        tie_embeddings=True,
        max_seq_len=8192,
        bos_id=2,
        eos_ids=(1,),
        pad_id=0,
    )


def gemma3_270m() -> ModelConfig:
    return ModelConfig(
        family="gemma3",
        vocab_size=262144,
        dim=640,
        num_layers=18,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        mlp_dim=2048,
        norm_eps=1e-6,
        norm_layout="sandwich",
        norm_plus_one=True,
        qk_norm="per_head",
        embed_scale=True,
        mlp_activation="gelu_tanh",
        attn_scale=256**-0.5,
        rope=RopeConfig(theta=1_000_000.0),
        rope_local=RopeConfig(theta=10_000.0),
        sliding_window=512,
        layer_kinds=every_nth_global(18, 6),
        tie_embeddings=True,
        max_seq_len=32768,
        bos_id=2,
        eos_ids=(1, 106),
        pad_id=0,
    )


def qwen3_0_6b() -> ModelConfig:
    return ModelConfig(
        family="qwen3",
        vocab_size=151936,
        dim=1024,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=3072,
        norm_eps=1e-6,
        qk_norm="per_head",
        rope=RopeConfig(theta=1_000_000.0),
        tie_embeddings=True,
        max_seq_len=40960,
        eos_ids=(151645, 151643),
        pad_id=151643,
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "smollm2-135m-instruct": smollm2_135m_instruct,
    "llama3-8b": llama3_8b,
    "llama3.1-8b": llama3_1_8b,
    "olmo3-7b": olmo3_7b,
    "gemma-2b": gemma_2b,
    "gemma3-270m": gemma3_270m,
    "qwen3-0.6b": qwen3_0_6b,
}


def get(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
