"""A tiny real model directory (random weights, SmolLM2's tokenizer) and a run config over it, for loop tests."""

import pathlib

import jax

import bitune_jax as bj
from bitune_jax.checkpoints.hf import save_hf
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params
from experiments.configs.common import base


def write_tiny_model(directory: pathlib.Path, tokenizer, vocab_size: int | None = None) -> pathlib.Path:
    cfg = ModelConfig(
        family="llama",
        vocab_size=vocab_size or tokenizer.vocab_size,
        dim=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        max_seq_len=512,
        eos_ids=tokenizer.eos_ids,
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
    )
    save_hf(directory, cfg, jax.tree.map(lambda x: x, init_params(cfg, jax.random.key(0))))
    tokenizer.save_hf(directory)
    return directory


def tiny_config(model_dir, workdir, **overrides):
    c = base()
    c.workdir = str(workdir)
    c.model.name = str(model_dir)
    c.data.num_samples = 3
    c.data.max_len = 512
    c.data.pad_multiple = 512
    c.data.synthetic.min_steps = 2
    c.data.synthetic.max_steps = 3
    c.train.epochs = 4
    c.train.lr = 3e-3
    c.checkpoint.every_steps = 2
    c.checkpoint.async_save = False
    c.log.tensorboard = True
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def smollm2_tokenizer():
    return bj.load("smollm2-135m-instruct").tokenizer
