"""Validation metrics over batches equal the same loss on all rows at once (the aggregation is the epoch's)."""

import jax
import numpy as np
import pytest

from bitune_jax.api import LM
from bitune_jax.data import TokenizedExample
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import make_mesh, tree_shardings
from bitune_jax.train.validation_loss import Validation

CFG = ModelConfig(
    family="llama",
    vocab_size=64,
    dim=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    max_seq_len=64,
)


def test_batched_validation_equals_one_batch_of_every_row():
    rng = np.random.RandomState(0)
    params = init_params(CFG, jax.random.key(0), scale=0.3)
    prompts = [rng.randint(1, 64, p).astype(np.int32) for p in (3, 7, 4)]
    # answers open with the model's own greedy tokens (predicted right), then random ones: accuracy strictly inside
    greedy = LM(cfg=CFG, params=params).generate([p.tolist() for p in prompts], max_new_tokens=3)
    examples = [
        TokenizedExample(p, np.asarray(g[:k] + rng.randint(1, 64, 4).tolist(), np.int32), f"val:{i}")
        for i, (p, g, k) in enumerate(zip(prompts, greedy, (3, 1, 2)))
    ]
    objective = Objective(kind="full", cfg=CFG)
    mesh = make_mesh()
    kwargs = dict(
        pad_id=0,
        multiple=16,
        max_width=64,
        mesh=mesh,
        trainable_shardings=tree_shardings(params, mesh),
        frozen_shardings={},
    )
    one_by_one = Validation(examples, objective, batch_size=1, **kwargs).run(params, {})
    all_rows = Validation(examples, objective, batch_size=3, **kwargs)
    batch = all_rows.batches.batch(0, 0)
    metrics = jax.jit(objective.loss)(params, {}, jax.tree.map(jax.numpy.asarray, batch))[1]
    assert one_by_one["val_loss"] == pytest.approx(float(metrics["loss"]), rel=1e-5)
    assert one_by_one["val_token_accuracy"] == pytest.approx(float(metrics["token_accuracy"]), rel=1e-6)
    assert one_by_one["val_sample_token_accuracy"] == pytest.approx(
        float(np.mean(np.asarray(metrics["per_example_accuracy"]))), rel=1e-6
    )
    assert all_rows.run(params, {}) == pytest.approx(one_by_one, rel=1e-5)
    assert 0.2 < one_by_one["val_token_accuracy"] < 0.9
