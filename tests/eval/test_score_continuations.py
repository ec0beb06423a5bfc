"""The one continuation scorer behind multiple choice and the lm-eval model, on a tiny random model (unit tier)."""

import jax
import numpy as np

from bitune_jax.eval.multiple_choice import lm_scorer, next_token_logprobs, score_continuations
from bitune_jax.models.transformer import forward, init_params
from tests.tiny_models import TINY


class _LM:  # what `lm_scorer` reads from a `bitune_jax.LM`
    def __init__(self, cfg, params):
        from bitune_jax.models.compute import Compute

        self.cfg, self.params, self.compute = cfg, params, Compute()


def test_sums_and_greedy_flags_equal_a_full_forward_per_pair():
    cfg = TINY["llama"]
    lm = _LM(cfg, init_params(cfg, jax.random.key(0), scale=0.5))
    rng = np.random.RandomState(0)
    pairs = [(rng.randint(1, cfg.vocab_size, p).tolist(), rng.randint(1, cfg.vocab_size, c).tolist()) for p, c in
             [(3, 2), (7, 1), (1, 5), (4, 4), (2, 3)]]  # fmt: skip
    # The greedy continuation of the first context, one token: its flag must be True.
    logits, _ = forward(lm.params, np.asarray([pairs[0][0]]), cfg)
    pairs.append((pairs[0][0], [int(np.argmax(logits[0, -1]))]))
    got = score_continuations(pairs, lm_scorer(lm), pad_id=0, max_len=cfg.max_seq_len, rows_multiple=4)
    for (ctx, cont), (logprob, greedy) in zip(pairs, got, strict=True):
        ids = np.asarray([ctx + cont])
        logits, _ = forward(lm.params, ids, cfg)
        want = float(np.asarray(next_token_logprobs(logits, ids))[0, len(ctx) - 1 : -1].sum())
        # float32: the padded batch reduces in another order than the one-row forward (sums near -30 differ ~1e-6)
        np.testing.assert_allclose(logprob, want, atol=1e-5, rtol=2e-6)
        argmax = np.argmax(np.asarray(logits)[0, len(ctx) - 1 : -1], axis=-1)
        assert greedy == bool((argmax == np.asarray(cont)).all())
    assert got[-1][1] and not all(g for _, g in got)


def test_padding_rows_and_width_do_not_change_the_scores():
    cfg = TINY["gemma3"]  # sliding-window layers too
    lm = _LM(cfg, init_params(cfg, jax.random.key(1), scale=0.5))
    rng = np.random.RandomState(1)
    pairs = [(rng.randint(1, cfg.vocab_size, 5).tolist(), rng.randint(1, cfg.vocab_size, 3).tolist()) for _ in range(3)]
    tight = score_continuations(pairs, lm_scorer(lm), pad_id=0, max_len=cfg.max_seq_len, rows_multiple=1)
    wide = score_continuations(
        pairs, lm_scorer(lm), pad_id=0, max_len=cfg.max_seq_len, rows_multiple=8, width_multiple=32
    )
    np.testing.assert_allclose([s for s, _ in tight], [s for s, _ in wide], atol=1e-5, rtol=0)
