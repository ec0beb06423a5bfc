"""Log-likelihood multiple choice: SmolLM2 on the committed set, against transformers, and Bitune at alpha = 0."""

import jax
import numpy as np
import pytest

from bitune_jax.bitune import BituneConfig, init_trainable
from bitune_jax.eval.datasets import MCItem, read_mc
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.multiple_choice import MCConfig, encode_item, next_token_logprobs, score_choices

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

MC_FILE = "tests/data_files/mc_small.jsonl"


@pytest.fixture(scope="module")
def items():
    return read_mc(MC_FILE)


@pytest.fixture(scope="module")
def plain(lm, items):
    return score_choices(lm, items, MCConfig(batch_items=20))  # one forward, one compile


def test_next_token_logprobs_matches_numpy():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 5, 7).astype(np.float32)
    tokens = rng.randint(0, 7, (2, 5)).astype(np.int32)
    got = np.asarray(next_token_logprobs(logits, tokens))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(got[:, :-1], want, atol=1e-5)
    assert (got[:, -1] == 0).all()


def test_encoding_formats(lm):
    tok = lm.tokenizer
    item = MCItem(question="What do bees make?", choices=("honey", "milk"), label=0, file="f", line=1)
    plain = encode_item(tok, item)
    assert tok.decode(plain.prompt) == "What do bees make?\nAnswer:"
    assert [tok.decode(c) for c in plain.continuations] == [" honey", " milk"] and plain.texts == [" honey", " milk"]
    chat = encode_item(tok, item, MCConfig(prompt_format="chat"))
    assert tok.decode(chat.prompt, skip_special=False).endswith("What do bees make?<|im_end|>\n<|im_start|>assistant\n")
    assert [tok.decode(c) for c in chat.continuations] == ["honey", "milk"]


def test_smollm2_scores_well_above_chance(plain):
    _, summary = plain
    # Measured: accuracy 0.80, per-token normalized 0.80, per-character 0.75, chance 0.31 (20 items, 2-4 choices).
    assert summary["items"] == 20 and summary["chance"] < 0.32
    assert summary["accuracy"] >= 0.7 and summary["accuracy_norm"] >= 0.7


def test_sum_logprobs_equal_transformers(lm, items, plain, tmp_path):
    import torch  # here, so that collecting the unit tier does not import torch
    import transformers

    scores, _ = plain
    lm.save_hf(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    rows = {}  # length -> [(item, choice, prompt, continuation)]: equal-length rows batched, no padding at all
    for i, item in enumerate(items):
        enc = encode_item(lm.tokenizer, item)
        for c, cont in enumerate(enc.continuations):
            rows.setdefault(len(enc.prompt) + len(cont), []).append((i, c, enc.prompt, cont))
    diffs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine torch's spinning threads make it ~10x slower
    try:
        with torch.no_grad():
            logits_by_length = {
                n: model(input_ids=torch.tensor([p + cont for _, _, p, cont in group])).logits
                for n, group in rows.items()
            }
    finally:
        torch.set_num_threads(threads)
    for n, group in rows.items():
        logits = logits_by_length[n]
        for r, (i, c, p, cont) in enumerate(group):
            logp = torch.log_softmax(logits[r, len(p) - 1 : len(p) - 1 + len(cont)].double(), dim=-1)
            ref = float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())
            diffs.append(abs(ref - scores[i].logprob_sum[c]))
    print(f"max |sum log-prob diff| vs transformers over {len(diffs)} choices: {max(diffs):.2e}")
    # Measured: max |diff| ~1e-5 over 65 choices (sums of -5 to -21).
    assert max(diffs) < 1e-3, max(diffs)


def test_bitune_at_alpha_zero_with_fresh_adapters_equals_plain(lm, items, plain):
    bcfg = BituneConfig(learn_alpha=False, w_init=0.0)  # alpha = 0 and B = 0: the plain model exactly
    trainable = init_trainable(lm.params, lm.cfg, bcfg, jax.random.key(0))
    subset = items[:8]
    scores, summary = score_choices(TrainedModel(lm, "bitune", trainable, bitune=bcfg), subset, MCConfig())
    got = np.concatenate([s.logprob_sum for s in scores])
    want = np.concatenate([s.logprob_sum for s in plain[0][:8]])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert summary["items"] == 8
