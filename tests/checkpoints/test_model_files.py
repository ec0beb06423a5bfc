"""A model directory is not trusted: each fault a user could hand the loader (wrong dtypes, a config that does not
match the file, values that would only surface as a divergence, damaged files) is refused before training, and the
error names the file and the tensor or key."""

import json
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

from bitune_jax.checkpoints.hf import load_hf, save_hf
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params

CFG = ModelConfig(
    family="llama", vocab_size=64, dim=16, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=32,
    max_seq_len=64, pad_id=0, bos_id=1, eos_ids=(2,),
)  # fmt: skip
Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture
def model(tmp_path):
    return save_hf(tmp_path / "model", CFG, init_params(CFG, jax.random.key(0)))


def edit_tensors(directory, change):
    path = directory / "model.safetensors"
    tensors = safetensors.numpy.load_file(path)
    change(tensors)
    safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})
    return path


def edit_config(directory, **values):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for k, v in values.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    path.write_text(json.dumps(config))
    return path


def test_the_untouched_model_loads(model):
    cfg, params = load_hf(model)
    assert cfg.num_layers == 2 and params["layers"]["q_proj"].shape == (2, 16, 16)


def test_integer_weights_are_refused_not_cast(model):
    path = edit_tensors(model, lambda t: t.update({Q: t[Q].astype(np.int32)}))
    with pytest.raises(ValueError, match=rf"{path}: tensor '{Q}' is I32; weights must be floating point"):
        load_hf(model)


def test_a_config_with_fewer_layers_than_the_file_is_refused(model):
    edit_config(model, num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"tensors that the config does not use, e.g. 'model.layers.1.*num_hidden"):
        load_hf(model)


def test_tensors_for_layers_that_do_not_exist_are_refused(model):
    path = edit_tensors(model, lambda t: t.update({Q.replace(".0.", ".7."): t[Q]}))
    with pytest.raises(ValueError, match=rf"{path}: 1 tensors that the config does not use, e.g. 'model.layers.7"):
        load_hf(model)


def test_unknown_layer_types_are_refused(model):
    path = edit_config(model, layer_types=["full_attention", "chunked_attention"])
    with pytest.raises(ValueError, match=rf"{path}: layer_types holds \['chunked_attention'\]; known: full_attention"):
        load_hf(model)


def test_a_tied_config_does_not_silently_ignore_the_files_lm_head(model):
    assert CFG.tie_embeddings
    edit_tensors(model, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] * 2}))
    with pytest.raises(ValueError, match=r"lm_head.weight that differs from the embedding.*tie_word_embeddings=true"):
        load_hf(model)
    edit_tensors(model, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))
    assert load_hf(model)[0].tie_embeddings  # an lm_head equal to the embedding is the tied weight itself


@pytest.mark.parametrize("sharded", [False, True])
def test_non_finite_weights_are_refused(model, sharded):
    def poison(t):
        t[Q] = t[Q].copy()
        t[Q][3, 5] = np.nan

    path = edit_tensors(model, poison)
    device = jax.devices()[0]
    shardings = (
        (lambda tree: jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), tree)) if sharded else None
    )
    with pytest.raises(ValueError, match=rf"{path}: tensor '{Q}' holds 1 NaN or infinite values"):
        load_hf(model, shardings=shardings)


def test_a_damaged_safetensors_header_names_the_file(model):
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:6])
    with pytest.raises(ValueError, match=rf"{path}: not a readable safetensors file"):
        load_hf(model)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"hidden_size": None}, r"missing key 'hidden_size'"),
        ({"rms_norm_eps": -1}, r"rms_norm_eps=-1 must be a small positive number"),
        ({"rope_theta": 0}, r"rope_theta=0 must be a positive number"),
        ({"pad_token_id": 99}, r"pad_token_id=99 is not a token id of the vocabulary of 64"),
        ({"eos_token_id": [2, -1]}, r"eos_token_id=\[2, -1\] is not a token id"),
        ({"num_attention_heads": 0}, r"num_attention_heads=0 must be a positive integer"),
        ({"tie_word_embeddings": "yes"}, r"tie_word_embeddings='yes' must be true or false"),
    ],
)
def test_bad_config_values_are_named_with_the_file(model, values, message):
    path = edit_config(model, **values)
    with pytest.raises(ValueError, match=rf"{path}: .*{message}"):
        load_hf(model)


def test_a_config_that_is_not_json_names_the_file(model):
    (model / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{model / 'config.json'}: not valid JSON"):
        load_hf(model)


@pytest.fixture(scope="module")
def smollm2_tokenizer_files(tmp_path_factory):
    from bitune_jax.checkpoints.gguf_file import locate_packaged_gguf, open_gguf
    from bitune_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf

    directory = tmp_path_factory.mktemp("tok")  # SmolLM2's tokenizer, from its GGUF's metadata alone
    tokenizer_from_gguf(open_gguf(locate_packaged_gguf("smollm2-135m-instruct"))).save_hf(directory)
    return directory


@pytest.fixture
def tokenizer_dir(smollm2_tokenizer_files, tmp_path):
    return shutil.copytree(smollm2_tokenizer_files, tmp_path / "tok")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_damaged_tokenizer_file_is_named(tokenizer_dir, name):
    from bitune_jax.tokenizer import load_hf_tokenizer

    load_hf_tokenizer(tokenizer_dir)  # intact, it loads
    path = tokenizer_dir / name
    path.write_text(path.read_text()[:100])
    with pytest.raises(ValueError, match=rf"{path}: cannot be read as a tokenizer file"):
        load_hf_tokenizer(tokenizer_dir)


def test_a_special_token_missing_from_the_vocabulary_is_named(tokenizer_dir):
    from bitune_jax.tokenizer import load_hf_tokenizer

    path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["eos_token"] = "<|no_such_token|>"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{path}: eos_token='<\|no_such_token\|>' is not a token of"):
        load_hf_tokenizer(tokenizer_dir)
