"""Bad input gets an error that names the thing that is wrong."""

import json

import jax
import numpy as np
import pytest
import safetensors.numpy

import bitune_jax as bj
from bitune_jax.checkpoints.hf import save_hf
from bitune_jax.models.transformer import init_params
from tests.tiny_models import TINY


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama")
    save_hf(directory, TINY["llama"], jax.tree.map(np.asarray, init_params(TINY["llama"], jax.random.key(0))))
    return directory


def test_unknown_preset_lists_known_ones():
    with pytest.raises(FileNotFoundError, match=r"'nope-1b'.*smollm2-135m-instruct"):
        bj.load("nope-1b")


def test_preset_without_shipped_weights_asks_for_a_path():
    with pytest.raises(FileNotFoundError, match=r"'olmo3-7b'.*local Hugging Face directory"):
        bj.load("olmo3-7b")
    assert bj.presets.get("olmo3-7b").layer_kinds.count("global") == 8
    with pytest.raises(KeyError, match="unknown preset 'olmo9'"):
        bj.presets.get("olmo9")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        bj.load(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="config.json"):
        bj.load(tmp_path)


def test_missing_tensor_is_named(llama_dir, tmp_path):
    tensors = safetensors.numpy.load_file(llama_dir / "model.safetensors")
    del tensors["model.layers.2.mlp.up_proj.weight"]
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((llama_dir / "config.json").read_text())
    with pytest.raises(KeyError, match=r"model.layers.2.mlp.up_proj.weight.*layers/up_proj"):
        bj.load(tmp_path)


def test_wrong_shape_names_parameter_and_both_shapes(llama_dir, tmp_path):
    tensors = safetensors.numpy.load_file(llama_dir / "model.safetensors")
    tensors["model.layers.1.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((llama_dir / "config.json").read_text())
    with pytest.raises(ValueError, match=r"k_proj.*\(64, 16\).*layers/k_proj.*\(64, 32\)"):
        bj.load(tmp_path)


def test_unsupported_architecture(llama_dir, tmp_path):
    config = json.loads((llama_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"config.json: unsupported architecture model_type='gpt2'"):
        bj.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
    with pytest.raises(ValueError, match="attention_bias"):
        bj.load(tmp_path)


def test_tokens_out_of_vocabulary_and_too_long(llama_dir):
    lm = bj.load(llama_dir)
    with pytest.raises(ValueError, match=r"token id 97 at \[0, 1\] is outside the vocabulary \[0, 97\)"):
        lm.logits(np.array([[5, 97]]))
    with pytest.raises(ValueError, match="token id -1"):
        lm.logits(np.array([[-1, 3]]))
    with pytest.raises(ValueError, match="exceeds the model context 256"):
        lm.generate([[3] * 250], max_new_tokens=10)
    with pytest.raises(ValueError, match="integer array"):
        lm.logits(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="without a tokenizer"):
        lm.chat("hi")
    with pytest.raises(ValueError, match="request 1: the prompt is empty"):
        lm.generate([[3, 4], []])
    with pytest.raises(ValueError, match="dtype must be one of"):
        bj.load(llama_dir, dtype="float16")
