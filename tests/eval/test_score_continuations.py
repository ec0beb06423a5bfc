"""The continuation scorers behind multiple choice and the lm-eval model, on tiny random models (unit tier)."""

import jax
import numpy as np

from bitune_jax.api import LM
from bitune_jax.bitune import BituneConfig, init_trainable
from bitune_jax.eval.datasets import MCItem
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.multiple_choice import (
    Encoded,
    MCConfig,
    _score_items,
    answer_scorer,
    next_token_logprobs,
    next_token_scorer,
    score_continuations,
    score_next_tokens,
)
from bitune_jax.models.transformer import forward, init_params
from tests.tiny_models import TINY


def test_sums_and_greedy_flags_equal_a_full_forward_per_pair():
    cfg = TINY["llama"]
    lm = LM(cfg, init_params(cfg, jax.random.key(0), scale=0.5))
    rng = np.random.RandomState(0)
    pairs = [(rng.randint(1, cfg.vocab_size, p).tolist(), rng.randint(1, cfg.vocab_size, c).tolist()) for p, c in
             [(3, 2), (7, 1), (1, 5), (4, 4), (2, 3)]]  # fmt: skip
    # The greedy continuation of the first context, one token: its flag must be True.
    logits, _ = forward(lm.params, np.asarray([pairs[0][0]]), cfg)
    pairs.append((pairs[0][0], [int(np.argmax(logits[0, -1]))]))
    got = score_continuations(pairs, answer_scorer(lm), pad_id=0, max_len=cfg.max_seq_len, rows_multiple=4)
    for (ctx, cont), (logprob, greedy) in zip(pairs, got, strict=True):
        ids = np.asarray([ctx + cont])
        logits, _ = jax.jit(forward, static_argnums=2)(lm.params, ids, cfg)
        want = float(np.asarray(next_token_logprobs(logits, ids))[0, len(ctx) - 1 : -1].sum())
        # float32: the padded batch reduces in another order than the one-row forward (sums near -30 differ ~1e-6)
        np.testing.assert_allclose(logprob, want, atol=1e-5, rtol=2e-6)
        argmax = np.argmax(np.asarray(logits)[0, len(ctx) - 1 : -1], axis=-1)
        assert greedy == bool((argmax == np.asarray(cont)).all())
    assert got[-1][1] and not all(g for _, g in got)


def test_padding_rows_and_width_do_not_change_the_scores():
    cfg = TINY["gemma3"]  # sliding-window layers too
    lm = LM(cfg, init_params(cfg, jax.random.key(1), scale=0.5))
    rng = np.random.RandomState(1)
    pairs = [(rng.randint(1, cfg.vocab_size, 5).tolist(), rng.randint(1, cfg.vocab_size, 3).tolist()) for _ in range(3)]
    tight = score_continuations(pairs, answer_scorer(lm), pad_id=0, max_len=cfg.max_seq_len, rows_multiple=1)
    wide = score_continuations(
        pairs, answer_scorer(lm), pad_id=0, max_len=cfg.max_seq_len, rows_multiple=8, width_multiple=32
    )
    np.testing.assert_allclose([s for s, _ in tight], [s for s, _ in wide], atol=1e-5, rtol=0)


def _one_token_pairs(cfg, rng, lengths):
    """`(context, candidate tokens)` pairs: each context with 4 distinct one-token candidates."""
    return [
        (rng.randint(1, cfg.vocab_size, n).tolist(), rng.choice(np.arange(1, cfg.vocab_size), 4, False).tolist())
        for n in lengths
    ]


def test_one_row_per_context_scores_every_candidate_as_one_row_each_would():
    cfg = TINY["llama"]
    lm = LM(cfg, init_params(cfg, jax.random.key(2), scale=0.5))
    contexts = _one_token_pairs(cfg, np.random.RandomState(2), [3, 9, 1, 6, 4])
    got = score_next_tokens(contexts, next_token_scorer(lm), pad_id=0, max_len=cfg.max_seq_len)
    per_row = [(ctx, [t]) for ctx, tokens in contexts for t in tokens]
    want = [s for s, _ in score_continuations(per_row, answer_scorer(lm), pad_id=0, max_len=cfg.max_seq_len)]
    # float32: batches of 8 and 24 rows reduce in other orders (log P near -10 differ ~1e-6)
    np.testing.assert_allclose(np.ravel(got), want, atol=1e-5, rtol=0)
    assert len({round(v, 3) for v in np.ravel(got)}) > 10  # the candidates are told apart, not one shared value


def test_bitune_one_row_per_context_equals_one_row_per_candidate_over_the_mixed_cache():
    cfg = TINY["gemma3"]  # sliding-window layers too
    base = init_params(cfg, jax.random.key(3), scale=0.5)
    bcfg = BituneConfig()
    trainable = init_trainable(base, cfg, bcfg, jax.random.key(4))
    noise = iter(jax.random.split(jax.random.key(5), len(jax.tree.leaves(trainable))))
    trainable = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(noise), x.shape, x.dtype), trainable)
    contexts = _one_token_pairs(cfg, np.random.RandomState(3), [5, 8, 2, 7])
    model = TrainedModel(LM(cfg, base), "bitune", trainable, bitune=bcfg)
    got = score_next_tokens(contexts, next_token_scorer(model), pad_id=0, max_len=cfg.max_seq_len)
    per_row = [(ctx, [t]) for ctx, tokens in contexts for t in tokens]
    rows = score_continuations(per_row, answer_scorer(model), pad_id=0, max_len=cfg.max_seq_len)
    np.testing.assert_allclose(np.ravel(got), [s for s, _ in rows], atol=1e-5, rtol=0)
    plain = score_next_tokens(contexts, next_token_scorer(LM(cfg, base)), pad_id=0, max_len=cfg.max_seq_len)
    assert np.abs(np.ravel(got) - np.ravel(plain)).max() > 1e-3  # the mixed cache is read, not the plain one


def test_items_of_one_token_choices_share_a_row_and_the_rest_keep_one_row_per_choice():
    """Mixed items: the shared path for the one-token items, one row per choice for the others, the same sums."""
    cfg = TINY["llama"]
    lm = LM(cfg, init_params(cfg, jax.random.key(6), scale=0.5))
    rng = np.random.RandomState(6)
    encoded = [
        Encoded(rng.randint(1, cfg.vocab_size, 4).tolist(), [[5], [9], [11]], ["a", "b", "c"]),
        Encoded(rng.randint(1, cfg.vocab_size, 6).tolist(), [[5, 7], [9]], ["a b", "c"]),
        Encoded(rng.randint(1, cfg.vocab_size, 2).tolist(), [[3], [4]], ["x", "y"]),
    ]
    items = [MCItem(question="q", choices=tuple(e.texts), label=0, file="f", line=i) for i, e in enumerate(encoded)]
    seen = []

    def counting(batch, widths):
        seen.append(sorted(int(n) for n in np.asarray(batch.prompt_len) if n > 1))  # filler rows: a 1-token prompt
        return next_token_scorer(lm)(batch, widths)

    args = (items, encoded, answer_scorer(lm), MCConfig(), 0, cfg.max_seq_len)
    shared, _ = _score_items(*args, counting)
    reference, _ = _score_items(*args)  # no next-token scorer: one row per choice for every item
    assert seen == [[2, 4]]  # items 0 and 2 in one forward, one row each; item 1 (a two-token choice) not there
    for s, r in zip(shared, reference, strict=True):
        np.testing.assert_allclose(s.logprob_sum, r.logprob_sum, atol=1e-5, rtol=0)
        assert s.n_tokens == r.n_tokens
