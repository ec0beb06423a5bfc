"""Generation from the mixed cache agrees with the training forward and is the same batched or alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.bitune import BituneConfig, bitune_generate, bitune_logits, prefill
from bitune_jax.bitune.generation import split_prompts
from bitune_jax.data.batch import SFTBatch
from bitune_jax.peft import PeftConfig
from tests.bitune.test_bitune import perturbed_trainable, tiny_model

BCFG = BituneConfig(peft=PeftConfig(rank=4, alpha=8.0))


def setup(family, max_len=64):
    cfg, base = tiny_model(family)
    cfg = cfg.replace(max_seq_len=max_len)
    trainable = perturbed_trainable(base, cfg, BCFG)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, cfg.vocab_size, n).tolist() for n in (7, 1, 12)]
    return cfg, base, trainable, prompts


@pytest.mark.parametrize("family", ["llama", "olmo3", "gemma3"])  # olmo3 and gemma3: sliding windows of 5
def test_first_answer_logits_equal_training_forward(family):
    cfg, base, trainable, prompts = setup(family)
    answers = [[5, 6, 7]] * len(prompts)
    batch = SFTBatch.from_pairs(list(zip(prompts, answers)), pad_id=0, max_len=cfg.max_seq_len)
    train_logits = bitune_logits(base, trainable, batch, cfg, BCFG)
    head, head_pos, last, last_pos = split_prompts(prompts, 0, cfg.max_seq_len, 4)
    first, _ = prefill(base, trainable, head, head_pos, last, last_pos, cfg, BCFG, cache_len=head.shape[1] + 5)
    for i, p in enumerate(prompts):
        np.testing.assert_allclose(first[i], train_logits[i, len(p) - 1], atol=1e-5, rtol=0)


@pytest.mark.integration
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_greedy_batched_equals_alone_and_recomputation(family):
    cfg, base, trainable, prompts = setup(family)
    batched = bitune_generate(base, trainable, prompts, cfg, BCFG, max_new_tokens=32)
    alone = [bitune_generate(base, trainable, [p], cfg, BCFG, max_new_tokens=32)[0] for p in prompts]
    assert batched == alone and all(len(g) == 32 for g in batched)

    # Recompute every step with the training forward (no cache): one fixed-width batch, one compilation.
    @jax.jit
    def next_token(tokens, prompt_len, length):
        logits = bitune_logits(base, trainable, SFTBatch(tokens, prompt_len, length), cfg, BCFG)
        return logits[jnp.arange(tokens.shape[0]), length - 1].argmax(-1)

    batch = SFTBatch.from_pairs([(p, [0]) for p in prompts], pad_id=0, max_len=cfg.max_seq_len, seq_len=12 + 33)
    tokens, prompt_len = np.asarray(batch.tokens), np.asarray(batch.prompt_len)
    length = prompt_len.copy()
    for _ in range(32):
        nxt = np.asarray(next_token(tokens, prompt_len, length))
        tokens[np.arange(len(prompts)), length] = nxt
        length += 1
    for i, p in enumerate(prompts):
        assert tokens[i, len(p) : len(p) + 32].tolist() == batched[i]


def test_generation_errors():
    cfg, base, trainable, prompts = setup("llama", max_len=16)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        bitune_generate(base, trainable, [[3], []], cfg, BCFG, max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt 0: 14 tokens \\+ max_new_tokens=4 exceed the context of 16"):
        bitune_generate(base, trainable, [[3] * 14], cfg, BCFG, max_new_tokens=4)
