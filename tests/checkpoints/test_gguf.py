"""GGUF loading: tiny files written here (exact round trip), and the two shipped models against transformers.

transformers reads GGUF files on its own (dequantizing to float32 and undoing llama.cpp's Q/K permutation and
Gemma's norm offset itself), so it is an independent reference for both the weights and the tokenizer.
"""

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.checkpoints.gguf import load_gguf, load_gguf_model
from bitune_jax.checkpoints.gguf_file import locate_packaged_gguf, open_gguf
from bitune_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from bitune_jax.checkpoints.hf_config import config_from_hf, config_to_hf
from bitune_jax.models.config import ModelConfig, RopeConfig, every_nth_global
from bitune_jax.models.transformer import KVCache, forward, init_params

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

# ------------------------------------------------------------------ tiny files written by the test

TINY = dict(
    vocab_size=61,
    dim=32,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=48,
    max_seq_len=128,
    bos_id=1,
    eos_ids=(2,),
    pad_id=0,
)
ORIG = dict(original_max_position_embeddings=TINY["max_seq_len"])
TINY_CONFIGS = {
    "llama": ModelConfig(family="llama", norm_eps=1e-5, rope=RopeConfig(theta=100000.0, **ORIG), **TINY),
    "llama_untied": ModelConfig(
        family="llama", tie_embeddings=False, rope=RopeConfig(theta=10000.0, kind="linear", factor=4.0, **ORIG), **TINY
    ),
    "qwen3": ModelConfig(family="qwen3", qk_norm="per_head", norm_eps=1e-6, rope=RopeConfig(theta=1e6, **ORIG), **TINY),
    "gemma3": ModelConfig(
        family="gemma3",
        norm_layout="sandwich",
        qk_norm="per_head",
        norm_plus_one=True,
        embed_scale=True,
        mlp_activation="gelu_tanh",
        attn_scale=8**-0.5,
        norm_eps=1e-6,
        rope=RopeConfig(theta=1e6, **ORIG),
        rope_local=RopeConfig(theta=10000.0, **ORIG),
        sliding_window=16,
        layer_kinds=every_nth_global(3, 6),
        **TINY,
    ),
}
_ARCH = {"llama": "llama", "llama_untied": "llama", "qwen3": "qwen3", "gemma3": "gemma3"}
# internal layer parameter -> GGUF tensor name under blk.{i}.
_GGUF_LAYER = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
    "q_norm": "attn_q_norm",
    "k_norm": "attn_k_norm",
    "attn_in_norm": "attn_norm",
    "mlp_in_norm": "ffn_norm",
    "attn_out_norm": "post_attention_norm",
    "mlp_out_norm": "post_ffw_norm",
}


def _random_params(cfg: ModelConfig, seed: int = 0):
    """Random weights; norms on a 1/256 grid so Gemma's stored `1 + w` converts back exactly."""
    params = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(seed), scale=0.5))
    rng = np.random.RandomState(seed)
    for name, w in params["layers"].items():
        if name.endswith("norm"):
            params["layers"][name] = (rng.randint(-128, 128, size=w.shape) / 256).astype(np.float32)
    params["final_norm"] = (rng.randint(-128, 128, size=params["final_norm"].shape) / 256).astype(np.float32)
    return params


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, on an HF `[out, in]` weight."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, cfg: ModelConfig, params, arch: str, vocab=None, permute: bool = True):
    """Write `params` the way llama.cpp's converter would (F32): `[out, in]` rows, permuted Q/K for llama,
    `1 + w` norms for Gemma."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.mlp_dim)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope.theta)
    if cfg.rope.kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(cfg.rope.factor)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    if cfg.sliding_window:
        w.add_sliding_window(cfg.sliding_window)
    w.add_bos_token_id(cfg.bos_id)
    w.add_eos_token_id(cfg.eos_ids[0])
    w.add_pad_token_id(cfg.pad_id)
    if vocab is not None:
        vocab(w)
    shift = 1.0 if cfg.norm_plus_one else 0.0
    w.add_tensor("token_embd.weight", params["embed"])
    w.add_tensor("output_norm.weight", params["final_norm"] + shift)
    if not cfg.tie_embeddings:
        w.add_tensor("output.weight", np.ascontiguousarray(params["lm_head"].T))
    for name, stacked in params["layers"].items():
        for i in range(cfg.num_layers):
            t = stacked[i]
            if name.endswith("norm"):
                t = t + shift
            else:
                t = t.T  # [in, out] -> [out, in]
                if permute and arch == "llama" and name == "q_proj":
                    t = _permute(t, cfg.num_heads)
                elif permute and arch == "llama" and name == "k_proj":
                    t = _permute(t, cfg.num_kv_heads)
            w.add_tensor(f"blk.{i}.{_GGUF_LAYER[name]}.weight", np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_tiny_gguf_round_trip_is_exact(name, tmp_path):
    cfg = TINY_CONFIGS[name]
    params = _random_params(cfg)
    path = write_tiny_gguf(tmp_path / f"{name}.gguf", cfg, params, _ARCH[name])
    got_cfg, got = load_gguf(path)
    assert got_cfg == cfg
    assert config_from_hf(config_to_hf(got_cfg)) == got_cfg  # the same config the HF path gives this model
    flat_want, tree_want = jax.tree_util.tree_flatten_with_path(params)
    flat_got, tree_got = jax.tree_util.tree_flatten_with_path(got)
    assert tree_got == tree_want
    for (p, want), (_, have) in zip(flat_want, flat_got, strict=True):
        assert have.dtype == np.float32
        np.testing.assert_array_equal(have, want, err_msg=jax.tree_util.keystr(p))


def test_tiny_llama_q_k_are_unpermuted(tmp_path):
    """A llama file written without llama.cpp's permutation loads with different Q/K (the un-permute is real),
    and V, which llama.cpp leaves alone, loads unchanged."""
    cfg = TINY_CONFIGS["llama"]
    params = _random_params(cfg)
    _, got = load_gguf(write_tiny_gguf(tmp_path / "plain.gguf", cfg, params, "llama", permute=False))
    assert not np.array_equal(got["layers"]["q_proj"], params["layers"]["q_proj"])
    assert not np.array_equal(got["layers"]["k_proj"], params["layers"]["k_proj"])
    np.testing.assert_array_equal(got["layers"]["v_proj"], params["layers"]["v_proj"])


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_gguf(missing)
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_gguf_model(missing)


def test_unsupported_architecture_names_file_and_arch(tmp_path):
    path = tmp_path / "enc.gguf"
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_block_count(2)
    w.add_embedding_length(8)
    w.add_tensor("token_embd.weight", np.zeros((5, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"enc\.gguf.*'bert'"):
        load_gguf(path)


def test_unknown_tensor_is_an_error(tmp_path):
    cfg = TINY_CONFIGS["llama"]
    params = _random_params(cfg)
    params["layers"]["q_norm"] = np.ones((cfg.num_layers, cfg.head_dim), np.float32)  # llama has no QK-norm
    path = write_tiny_gguf(tmp_path / "extra.gguf", cfg, params, "llama")
    with pytest.raises(ValueError, match="attn_q_norm"):
        load_gguf(path)


def _byte_vocab(tokens, merges, types, template):
    def add(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_add_bos_token(False)
        w.add_chat_template(template)

    return add


def test_tiny_byte_level_tokenizer(tmp_path):
    from bitune_jax.checkpoints.gguf_tokenizer import _bytes_to_unicode

    alphabet = list(_bytes_to_unicode().values())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]
    tokens = specials + alphabet + ["he", "ll", "hell", "hello", "Ġw", "Ġwo"]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    cfg = TINY_CONFIGS["llama"].replace(vocab_size=len(tokens), bos_id=1, eos_ids=(2,), pad_id=2)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    path = write_tiny_gguf(
        tmp_path / "tok.gguf", cfg, _random_params(cfg), "llama", vocab=_byte_vocab(tokens, merges, types, template)
    )
    got_cfg, _, tok = load_gguf_model(path)
    assert got_cfg.vocab_size == tok.vocab_size == len(tokens)
    assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.add_bos) == (1, (2,), 2, False)
    assert tok.special_tokens == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
    assert tok.chat_template == template
    ids = tok.encode("<|im_start|>hello wo<|im_end|>")
    assert ids == [1, tokens.index("hello"), tokens.index("Ġwo"), 2]
    assert tok.decode(ids) == "hello wo"
    assert tok.decode(ids, skip_special=False) == "<|im_start|>hello wo<|im_end|>"
    text = "héllo ☃"
    assert tok.decode(tok.encode(text)) == text


def test_tiny_sentencepiece_tokenizer(tmp_path):
    """A Gemma-style vocabulary: merges rebuilt from the token order, byte fallback, spaces as "▁"."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    pieces = ["▁", "h", "e", "l", "o", "w", "he", "ll", "hell", "hello", "▁hello", "  "]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [3] * 4 + [6] * 256 + [1] * (len(pieces) - 1) + [4]

    def vocab(w):
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * len(tokens))
        w.add_token_types(types)
        w.add_unk_token_id(3)
        w.add_add_bos_token(True)

    cfg = TINY_CONFIGS["gemma3"].replace(vocab_size=len(tokens), bos_id=2, eos_ids=(1,), pad_id=0)
    path = write_tiny_gguf(tmp_path / "sp.gguf", cfg, _random_params(cfg), "gemma3", vocab=vocab)
    tok = tokenizer_from_gguf(open_gguf(path))
    assert (tok.bos_id, tok.eos_ids, tok.add_bos) == (2, (1,), True)
    ids = tok.encode("hello hello  w!")
    bang = 4 + ord("!")
    assert ids == [2, tokens.index("hello"), tokens.index("▁hello"), tokens.index("  "), tokens.index("w"), bang]
    assert tok.decode(ids) == "hello hello  w!"
    assert tok.decode(tok.encode("ĉa ☃", add_bos=False)) == "ĉa ☃"


# ------------------------------------------------------------------ the shipped models


def _packaged(name):
    return locate_packaged_gguf(name)  # the test extras install both wheels; a missing one is a failure


@pytest.fixture(scope="module")
def smollm2():
    path = _packaged("smollm2-135m-instruct")
    cfg, params, tok = load_gguf_model(path)
    return path, cfg, jax.tree.map(jnp.asarray, params), tok


@pytest.fixture(scope="module")
def gemma3():
    path = _packaged("gemma3-270m")
    cfg, params, tok = load_gguf_model(path)
    return path, cfg, jax.tree.map(jnp.asarray, params), tok


STRINGS = [
    "Hello, world!",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "Ünïcödé 日本語 🙂 naïve café — “quotes”",
    "In 2024, 12345 apples cost $3.50.",
    "  leading spaces\tand\ttabs\n\n\nnewlines   x",
    "don't you'll I'M <table><tr>x</tr>",
]


def _hf_tokenizer(path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _hf_logits(path, ids):
    import accelerate  # noqa: F401  (transformers reads GGUF through it)
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


def _batch(tok, texts, n):
    rows = [tok.encode(t)[:n] for t in texts]
    assert all(len(r) == n for r in rows), rows
    return np.asarray(rows, np.int32)


def _greedy(params, cfg, prompt, steps):
    cache = KVCache.init(cfg, 1, len(prompt) + steps)
    logits, cache = forward(params, jnp.asarray([prompt], jnp.int32), cfg, cache=cache)
    out = []
    for _ in range(steps):
        out.append(int(np.asarray(logits)[0, -1].argmax()))
        pos = jnp.asarray([[len(prompt) + len(out) - 1]], jnp.int32)
        logits, cache = forward(params, jnp.asarray([out[-1:]], jnp.int32), cfg, positions=pos, cache=cache)
    return out


def test_smollm2_config_and_chat(smollm2):
    _, cfg, params, tok = smollm2
    assert (cfg.family, cfg.num_layers, cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim) == (
        "llama",
        30,
        576,
        9,
        3,
        64,
        1536,
    )
    assert (cfg.vocab_size, cfg.rope.theta, cfg.norm_eps, cfg.tie_embeddings) == (49152, 100000.0, 1e-5, True)
    assert config_from_hf(config_to_hf(cfg)) == cfg
    assert tok.token_id("<|im_start|>") == 1 and tok.encode("<|im_start|>") == [1]
    assert tok.eos_ids == (2,) and tok.special_tokens["eos_token"] == "<|im_end|>"
    assert "<|im_start|>" in tok.chat_template
    prompt = tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    answer = tok.decode(_greedy(params, cfg, prompt, 8))
    assert "Paris" in answer, answer


def test_smollm2_tokens_match_transformers(smollm2):
    path, _, _, tok = smollm2
    ref = _hf_tokenizer(path)
    for text in STRINGS:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text), skip_special=False) == text


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2):
    path, cfg, params, tok = smollm2
    texts = [
        "<|im_start|>user\nWhat is 2+2? Explain it to me.<|im_end|>",
        "The capital of France is Paris, and the capital of Germany is Berlin.",
    ]
    ids = _batch(tok, texts, 12)
    ref = _hf_logits(path, ids)
    ours = np.asarray(forward(params, jnp.asarray(ids), cfg)[0])
    # measured: max |diff| 1.3e-4 on logits up to ~33 (float32 summation order only)
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


@pytest.mark.slow
def test_gemma3_config_and_tokens_match_transformers(gemma3):
    path, cfg, _, tok = gemma3
    assert (cfg.family, cfg.num_layers, cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (
        "gemma3",
        18,
        640,
        4,
        1,
        256,
    )
    assert cfg.scale == 256**-0.5  # query_pre_attn_scalar = head_dim (not dim // heads = 160)
    assert cfg.layer_kinds == every_nth_global(18, 6) and cfg.sliding_window == 512
    assert (cfg.rope.theta, cfg.rope_local.theta, cfg.tie_embeddings) == (1e6, 1e4, True)
    assert config_from_hf(config_to_hf(cfg)) == cfg
    assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.add_bos) == (2, (1,), 0, True)
    assert tok.encode("<start_of_turn>", add_bos=False) == [105]
    ref = _hf_tokenizer(path)
    for text in STRINGS:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(tok.encode(text, add_bos=False), skip_special=False) == text


@pytest.mark.slow
def test_gemma3_logits_match_transformers(gemma3):
    path, cfg, params, tok = gemma3
    texts = [
        "The capital of France is Paris. The capital of Germany is Berlin.",
        "Once upon a time, there was a little girl who lived in a village.",
    ]
    ids = _batch(tok, texts, 12)
    ref = _hf_logits(path, ids)
    ours = np.asarray(forward(params, jnp.asarray(ids), cfg)[0])
    # measured: max |diff| 4e-5 on logits up to ~29
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)
    assert tok.decode(_greedy(params, cfg, tok.encode("The capital of France is"), 6)).strip()


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_a_truncated_gguf_names_the_file(tmp_path, keep):
    """Cut in its header or in its tensor data, as an interrupted download leaves it."""
    cfg = TINY_CONFIGS["llama"]
    path = write_tiny_gguf(tmp_path / "cut.gguf", cfg, _random_params(cfg), _ARCH["llama"])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=rf"{path}: not a readable GGUF file, truncated or damaged"):
        load_gguf(path)
