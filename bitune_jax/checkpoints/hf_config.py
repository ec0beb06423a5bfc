"""Hugging Face `config.json` <-> `ModelConfig`, for every supported family."""

from __future__ import annotations

from typing import Any

from bitune_jax.models.config import ModelConfig, RopeConfig

SUPPORTED = ("llama", "mistral", "olmo2", "olmo3", "gemma", "gemma3_text", "gemma3", "qwen3")
HF_ARCH = {
    "llama": ("LlamaForCausalLM", "llama"),
    "olmo2": ("Olmo2ForCausalLM", "olmo2"),
    "olmo3": ("Olmo3ForCausalLM", "olmo3"),
    "gemma": ("GemmaForCausalLM", "gemma"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}


def _rope(hf: dict, layer_type: str | None, default_theta: float, source: str = "config.json") -> RopeConfig:
    rp = hf.get("rope_parameters")
    if isinstance(rp, dict) and layer_type in rp:  # transformers v5, per layer type
        rp = dict(rp[layer_type] or {})
    elif isinstance(rp, dict) and "rope_type" in rp or isinstance(rp, dict) and "rope_theta" in rp:
        rp = dict(rp)
    else:  # transformers v4 layout: rope_theta + rope_scaling
        rp = dict(hf.get("rope_scaling") or {}) if layer_type != "sliding_attention" else {}
        theta = hf.get("rope_local_base_freq") if layer_type == "sliding_attention" else None
        rp.setdefault("rope_theta", theta or hf.get("rope_theta", default_theta))
    theta = rp.get("rope_theta", default_theta)
    if isinstance(theta, bool) or not isinstance(theta, int | float) or not 0 < theta < float("inf"):
        raise ValueError(f"{source}: rope_theta={theta!r} must be a positive number")
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind not in ("default", "linear", "llama3", "yarn"):
        raise ValueError(f"{source}: unsupported rope_type {kind!r} (supported: default, linear, llama3, yarn)")
    orig = rp.get("original_max_position_embeddings") or hf.get("original_max_position_embeddings")
    return RopeConfig(
        theta=float(rp.get("rope_theta", default_theta)),
        kind=kind,
        factor=float(rp.get("factor") or 1.0),
        low_freq_factor=float(rp.get("low_freq_factor", 1.0)),
        high_freq_factor=float(rp.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(orig or hf.get("max_position_embeddings", 8192)),
        beta_fast=float(rp.get("beta_fast") or 32.0),
        beta_slow=float(rp.get("beta_slow") or 1.0),
        attention_factor=rp.get("attention_factor"),
        truncate=bool(rp.get("truncate", True)),
    )


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
LAYER_TYPES = ("full_attention", "sliding_attention")


def _check_values(hf: dict[str, Any], source: str) -> None:
    """Every value the model is built from, checked at once and named with the file: a wrong one would otherwise
    load and surface later as a divergence or as another architecture."""
    problems = [f"missing key {k!r}" for k in REQUIRED if k not in hf]
    positive = (*REQUIRED, "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window")
    for k in positive:
        v = hf.get(k)
        if k in hf and v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"{k}={v!r} must be a positive integer")
    eps = hf.get("rms_norm_eps", 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        problems.append(f"rms_norm_eps={eps!r} must be a small positive number")
    for k in ("rope_theta", "rope_local_base_freq"):
        v = hf.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf")):
            problems.append(f"{k}={v!r} must be a positive number")
    vocab = hf.get("vocab_size")
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = hf.get(k)
        for i in value if isinstance(value, list | tuple) else () if value is None else (value,):
            if isinstance(vocab, int) and (isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab):
                problems.append(f"{k}={hf.get(k)!r} is not a token id of the vocabulary of {vocab}")
    if not isinstance(hf.get("tie_word_embeddings", False), bool):
        problems.append(f"tie_word_embeddings={hf['tie_word_embeddings']!r} must be true or false")
    layer_types = hf.get("layer_types")
    if layer_types is not None:
        unknown = sorted({t for t in layer_types if t not in LAYER_TYPES}, key=str)
        if unknown:
            problems.append(f"layer_types holds {unknown}; known: {', '.join(LAYER_TYPES)}")
        if isinstance(hf.get("num_hidden_layers"), int) and len(layer_types) != hf["num_hidden_layers"]:
            problems.append(
                f"layer_types has {len(layer_types)} entries but num_hidden_layers={hf['num_hidden_layers']}"
            )
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Build a `ModelConfig` from a parsed Hugging Face config; unsupported features raise naming the key."""
    model_type = hf.get("model_type")
    if model_type == "gemma3" and "text_config" in hf:
        hf = {**hf["text_config"], "model_type": "gemma3_text"}
        model_type = "gemma3_text"
    if model_type not in SUPPORTED:
        raise ValueError(
            f"{source}: unsupported architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {', '.join(SUPPORTED)}"
        )
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ValueError(f"{source}: {key}=true is not supported")
    if model_type == "qwen3" and hf.get("use_sliding_window"):
        raise ValueError(f"{source}: Qwen3 use_sliding_window=true is not supported")
    if model_type == "mistral" and hf.get("sliding_window"):
        raise ValueError(f"{source}: Mistral sliding_window is not supported")

    _check_values(hf, source)
    heads = hf["num_attention_heads"]
    common = dict(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        mlp_dim=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=hf.get("tie_word_embeddings", model_type.startswith("gemma")),
        max_seq_len=hf.get("max_position_embeddings", 8192),
        bos_id=hf.get("bos_token_id"),
        eos_ids=_ids(hf.get("eos_token_id")),
        pad_id=hf.get("pad_token_id"),
    )
    layer_types = hf.get("layer_types")
    kinds = tuple("sliding" if t == "sliding_attention" else "global" for t in layer_types) if layer_types else ()
    if model_type in ("llama", "mistral"):
        return ModelConfig(family="llama", rope=_rope(hf, None, 10000.0, source), **common)
    if model_type == "qwen3":
        return ModelConfig(family="qwen3", qk_norm="per_head", rope=_rope(hf, None, 10000.0, source), **common)
    if model_type == "olmo2":
        return ModelConfig(
            family="olmo2", norm_layout="post", qk_norm="full", rope=_rope(hf, None, 10000.0, source), **common
        )
    if model_type == "olmo3":
        return ModelConfig(
            family="olmo3",
            norm_layout="post",
            qk_norm="full",
            rope=_rope(hf, "full_attention", 500000.0, source),
            rope_local=_rope(hf, "sliding_attention", 500000.0, source),
            sliding_window=hf.get("sliding_window"),
            layer_kinds=kinds,
            **common,
        )
    gemma = dict(norm_plus_one=True, embed_scale=True, mlp_activation="gelu_tanh")
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu"):
        raise ValueError(f"{source}: unsupported activation {act!r}")
    if model_type == "gemma":
        return ModelConfig(family="gemma", rope=_rope(hf, None, 10000.0, source), **gemma, **common)
    return ModelConfig(
        family="gemma3",
        norm_layout="sandwich",
        qk_norm="per_head",
        attn_scale=float(hf.get("query_pre_attn_scalar", common["head_dim"])) ** -0.5,
        attn_logit_softcap=hf.get("attn_logit_softcapping"),
        final_logit_softcap=hf.get("final_logit_softcapping"),
        rope=_rope(hf, "full_attention", 1_000_000.0, source),
        rope_local=_rope(hf, "sliding_attention", 10000.0, source),
        sliding_window=hf.get("sliding_window"),
        layer_kinds=kinds,
        **gemma,
        **common,
    )


def _rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": rope.kind, "rope_theta": rope.theta}
    if rope.kind == "linear":
        out["factor"] = rope.factor
    elif rope.kind == "llama3":
        out.update(
            factor=rope.factor,
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            original_max_position_embeddings=rope.original_max_position_embeddings,
        )
    elif rope.kind == "yarn":
        out.update(
            factor=rope.factor,
            beta_fast=rope.beta_fast,
            beta_slow=rope.beta_slow,
            original_max_position_embeddings=rope.original_max_position_embeddings,
        )
        if rope.attention_factor is not None:
            out["attention_factor"] = rope.attention_factor
    return out


def _legacy_rope(cfg: ModelConfig) -> dict[str, Any]:
    """The transformers-4 fields for RoPE: `rope_theta` and `rope_scaling` of the global layers (and, for Gemma 3,
    `rope_local_base_freq` of the sliding ones). A v4 reader ignores `rope_parameters`, so without these it would
    silently run RoPE base 10000."""
    scaling = {k: v for k, v in _rope_to_hf(cfg.rope).items() if k != "rope_theta"}
    out: dict[str, Any] = {"rope_theta": cfg.rope.theta, "rope_scaling": None}
    if scaling["rope_type"] != "default":
        out["rope_scaling"] = {**scaling, "type": scaling["rope_type"]}  # "type": the name before 4.45
    if cfg.family == "gemma3":
        out["rope_local_base_freq"] = (cfg.rope_local or cfg.rope).theta
    return out


def config_to_hf(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
    """A `config.json` that `transformers` loads as the same model, in version 5 (`rope_parameters`, `dtype`) and
    in version 4 (`rope_theta`, `rope_scaling`, `torch_dtype`), both layouts side by side. `dtype`: the weights'."""
    if cfg.family not in HF_ARCH:
        raise ValueError(f"no Hugging Face layout for family {cfg.family!r}")
    arch, model_type = HF_ARCH[cfg.family]
    hf: dict[str, Any] = dict(
        architectures=[arch],
        model_type=model_type,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.mlp_dim,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        max_position_embeddings=cfg.max_seq_len,
        bos_token_id=cfg.bos_id,
        eos_token_id=list(cfg.eos_ids) if len(cfg.eos_ids) > 1 else (cfg.eos_ids[0] if cfg.eos_ids else None),
        pad_token_id=cfg.pad_id,
        attention_bias=False,
        dtype=dtype,
        torch_dtype=dtype,
        **_legacy_rope(cfg),
    )
    if cfg.family in ("llama", "qwen3"):
        hf["hidden_act"], hf["mlp_bias"] = "silu", False
    if cfg.family.startswith("gemma"):
        hf["hidden_activation"] = "gelu_pytorch_tanh"
    if cfg.layer_kinds:
        hf["layer_types"] = ["sliding_attention" if k == "sliding" else "full_attention" for k in cfg.layer_kinds]
        hf["sliding_window"] = cfg.sliding_window
        hf["rope_parameters"] = {
            "full_attention": _rope_to_hf(cfg.rope),
            "sliding_attention": _rope_to_hf(cfg.rope_local or cfg.rope),
        }
    else:
        hf["rope_parameters"] = _rope_to_hf(cfg.rope)
    if cfg.family == "gemma3":
        hf["query_pre_attn_scalar"] = round(cfg.scale**-2)
        hf["attn_logit_softcapping"] = cfg.attn_logit_softcap
        hf["final_logit_softcapping"] = cfg.final_logit_softcap
    return hf
