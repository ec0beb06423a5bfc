"""Bitune LoRA on the real SmolLM2-135M-Instruct for a few hundred updates (slow: run with -m slow).

The trainer's own path (`experiments.run`'s `run` on the `smollm2_bitune.py` recipe) on a small instruction set: the
synthetic arithmetic task without the trace, in the paper's plain format. The answer loss must fall and the learned
mixing coefficients must leave their initial 0.5: the bidirectional stream is being used, not ignored.
"""

import numpy as np
import pytest

from bitune_jax.train.loop import run
from experiments.configs import smollm2_bitune

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration


@pytest.mark.slow
def test_bitune_lora_on_smollm2_learns_and_moves_alphas(tmp_path):
    c = smollm2_bitune.get_config()
    c.workdir = str(tmp_path)
    c.data.synthetic.cot = False
    c.data.synthetic.min_steps, c.data.synthetic.max_steps = 1, 2
    c.data.synthetic.pool_size = 64
    c.data.max_len = c.data.pad_multiple = 96
    c.data.batch_size = 4
    c.train.epochs = 13  # 16 batches an epoch: 208 updates, capped at 200
    c.train.max_updates = 200
    c.train.lr = 1e-3
    c.checkpoint.every_steps = 0
    summary = run(c)
    losses = [h["loss"] for h in summary["history"]]
    assert summary["steps"] == 200
    assert losses[-1] < 0.5 * losses[0], losses
    alphas = np.concatenate([np.ravel(summary["alpha_k"]), np.ravel(summary["alpha_v"])])
    assert np.max(np.abs(alphas - 0.5)) > 0.05, alphas
    print("epoch losses", np.round(losses, 4).tolist())
    print("alpha_k", np.round(summary["alpha_k"], 3).tolist())
    print("alpha_v", np.round(summary["alpha_v"], 3).tolist())
