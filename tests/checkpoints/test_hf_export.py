"""`config.json` exports carry both transformers layouts: a version-4 reader, which ignores `rope_parameters`,
gets the same RoPE (not base 10000), and `generation_config.json` holds the special ids. Version 5 loading the
exports with equal logits is tested per family in tests/models/test_hf_equivalence.py."""

import json

import jax
import numpy as np
import pytest

from bitune_jax.checkpoints.hf import save_hf
from bitune_jax.checkpoints.hf_config import config_from_hf, config_to_hf
from bitune_jax.models import presets
from bitune_jax.models.transformer import init_params


def as_transformers_4_reads_it(hf: dict) -> dict:
    """The fields a transformers-4 config class reads: no `rope_parameters` (a v5 name), no `dtype`."""
    return {k: v for k, v in hf.items() if k not in ("rope_parameters", "dtype")}


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_both_layouts_describe_the_same_model(name):
    cfg = presets.get(name)
    hf = config_to_hf(cfg)
    v5, v4 = config_from_hf(hf), config_from_hf(as_transformers_4_reads_it(hf))
    assert v4 == v5  # v4 (rope_theta, rope_scaling, rope_local_base_freq) reads what v5 (rope_parameters) reads
    for ours, read in ((cfg.rope, v5.rope), (cfg.rope_local, v5.rope_local)):  # and that is the preset's RoPE
        if ours is not None:
            assert (read.kind, read.theta, read.factor) == (ours.kind, ours.theta, ours.factor)
    assert hf["rope_theta"] == cfg.rope.theta and hf["torch_dtype"] == hf["dtype"] == "float32"
    assert hf["max_position_embeddings"] == cfg.max_seq_len


def test_smollm2_export_keeps_its_rope_base_for_transformers_4():
    hf = config_to_hf(presets.get("smollm2-135m-instruct"))
    assert hf["rope_theta"] == 100000.0 and hf["rope_scaling"] is None


def test_scaled_and_two_base_ropes_in_the_legacy_layout():
    llama = config_to_hf(presets.get("llama3.1-8b"))
    assert llama["rope_scaling"]["rope_type"] == llama["rope_scaling"]["type"] == "llama3"
    assert llama["rope_scaling"]["factor"] == 8.0 and "rope_theta" not in llama["rope_scaling"]
    gemma3 = config_to_hf(presets.get("gemma3-270m"))
    assert gemma3["rope_theta"] == 1_000_000.0 and gemma3["rope_local_base_freq"] == 10_000.0


def test_export_writes_generation_config_and_the_weights_dtype(tmp_path):
    cfg = presets.get("smollm2-135m-instruct")
    cfg = type(cfg)(
        **{
            **cfg.__dict__,
            "num_layers": 1,
            "dim": 64,
            "mlp_dim": 128,
            "num_heads": 2,
            "num_kv_heads": 1,
            "head_dim": 32,
            "vocab_size": 256,
        }
    )
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), init_params(cfg, jax.random.key(0)))
    save_hf(tmp_path, cfg, params)
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation == {"bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_ids[0], "pad_token_id": cfg.pad_id}
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "float32"
