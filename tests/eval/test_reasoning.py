"""Reasoning eval: records and summary from canned generations, the JSONL dump, and greedy batched decoding equal
to one question at a time with SmolLM2's tokenizer (plain, and Bitune at alpha = 0)."""

import dataclasses
import json

import jax
import pytest

from bitune_jax.api import LM
from bitune_jax.bitune import BituneConfig, init_trainable
from bitune_jax.engine import Completion
from bitune_jax.eval.datasets import ReasoningItem
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.reasoning import (
    SUFFIXES,
    ReasoningEvalConfig,
    build_prompt,
    evaluate,
    evaluate_generate_fn,
    write_generations_jsonl,
)
from bitune_jax.models.transformer import init_params


def item(question, answer, kind="aime", line=1):
    return ReasoningItem(
        messages=[{"role": "user", "content": question}], answer=answer, kind=kind, file="q.jsonl", line=line
    )


QUESTIONS = [
    item("What is 2 + 3?", "5", line=1),
    item("What is 10 - 4?", "6", line=2),
    item("What is 3 * 3? Answer briefly.", "9", line=3),
]


def test_prompt_has_suffix_and_chat_template(lm):
    text, ids = build_prompt(lm.tokenizer, item("What is 2 + 3?", "5"), ReasoningEvalConfig())
    assert (
        "What is 2 + 3?\n\nAnswer the query and place the final integer inside \\boxed{} in your response. For "
        "example \\boxed{42}.<|im_end|>"
    ) in text
    assert "What is 2 + 3?" + SUFFIXES["aime"] + "<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n") and lm.tokenizer.decode(ids, skip_special=False) == text
    gpqa, _ = build_prompt(lm.tokenizer, item("Q\n\nA: x\nB: y", "A", kind="gpqa"), ReasoningEvalConfig())
    assert (
        "Answer the query and place the letter of chosen solution inside \\boxed{} in your response. For "
        "example \\boxed{A}.<|im_end|>"
    ) in gpqa  # the authors' eval.py string
    plain, _ = build_prompt(lm.tokenizer, item("Q", "1"), ReasoningEvalConfig(chat_template=False, suffix=" Go."))
    assert plain == "Q Go."


def test_records_and_summary_from_canned_generations(lm, tmp_path):
    tok, eos = lm.tokenizer, lm.eos_ids[0]
    canned = {  # per question, 4 samples: (text, ends with EOS)
        0: [("so \\boxed{5}", True), ("\\boxed{4}", True), ("\\boxed{ 5 }", True), ("thinking...", False)],
        1: [("\\boxed{7}", True), ("\\boxed{7} \\boxed{6}", True), ("\\boxed{1}", False), ("\\boxed{6", False)],
    }
    calls = []

    def fake_generate(requests):
        calls.append(requests)
        return [
            Completion(q, [tok.encode(text) + ([eos] if ended else []) for text, ended in canned[q]], [])
            for q, _ in enumerate(requests)
        ]

    cfg = ReasoningEvalConfig(n=4, batch_size=3, ks=(1, 2, 4), seed=10, top_k=5)
    records, summary = evaluate_generate_fn(fake_generate, tok, QUESTIONS[:2], cfg, lm.eos_ids)
    (requests,) = calls  # one call: every question a request of n samples, seeded by its index
    assert [(r.n, r.seed, r.max_new_tokens, r.temperature, r.top_p, r.top_k) for r in requests] == [
        (4, 10, 512, 0.6, 0.95, 5),
        (4, 11, 512, 0.6, 0.95, 5),
    ]
    assert requests[0].prompt == build_prompt(tok, QUESTIONS[0], cfg)[1]
    a, b = records
    assert a.answers == ["5", "4", " 5 ", None] and a.correct == [True, False, True, False]
    assert a.correct_original == [True, False, False, False]  # the authors compare without stripping
    assert b.answers == ["7", "6", "1", None] and b.correct == [False, True, False, False]
    assert a.terminated == [True, True, True, False] and b.terminated == [True, True, False, False]
    assert a.seeds == [10] * 4 and b.seeds == [11] * 4
    assert a.lengths[0] == len(tok.encode("so \\boxed{5}")) + 1 and a.generations[0] == "so \\boxed{5}"
    assert a.source == "q.jsonl:1" and a.gold == "5" and "What is 2 + 3?" in a.prompt
    assert summary["avg@n"] == pytest.approx(3 / 8)
    assert summary["avg@n_original"] == pytest.approx(2 / 8)
    assert summary["pass@1"] == pytest.approx(3 / 8)
    assert summary["pass@2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)  # c=2 and c=1 of n=4
    assert summary["pass@2_first"] == pytest.approx(1.0) and summary["pass@1_first"] == pytest.approx(0.5)
    assert summary["pass@4"] == summary["pass@4_first"] == pytest.approx(1.0)
    assert summary["terminated_fraction"] == pytest.approx(5 / 8)
    assert summary["mean_length"] == pytest.approx(sum(a.lengths + b.lengths) / 8)

    path = write_generations_jsonl(records, tmp_path / "gen.jsonl", summary)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["summary"]["avg@n"] == summary["avg@n"]
    assert lines[1]["generations"] == a.generations and lines[2]["correct"] == b.correct


def test_config_checks():
    with pytest.raises(ValueError, match="every k in ks"):
        ReasoningEvalConfig(n=2, ks=(4,))
    with pytest.raises(ValueError, match="top_p"):
        ReasoningEvalConfig(top_p=0.0)
    assert ReasoningEvalConfig.authors("aime").n == 16 and ReasoningEvalConfig.authors("gpqa").ks == (1, 4)


def test_greedy_batched_equals_one_at_a_time(lm):
    # SmolLM2's tokenizer and chat template over a two-layer model of its vocabulary: the decoding is under test here,
    # not the weights (and unoptimized test compiles would make 30 layers slow).
    cfg = dataclasses.replace(lm.cfg, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64)
    lm = LM(cfg, init_params(cfg, jax.random.key(0), scale=0.5), lm.tokenizer)
    greedy = dict(temperature=0.0, max_new_tokens=6)
    batched, summary = evaluate(lm, QUESTIONS, ReasoningEvalConfig(batch_size=3, **greedy))
    alone = [evaluate(lm, [q], ReasoningEvalConfig(batch_size=1, **greedy))[0][0] for q in QUESTIONS]
    assert [r.generations for r in batched] == [r.generations for r in alone]
    assert [r.lengths for r in batched] == [r.lengths for r in alone]
    assert all(0 < r.lengths[0] <= 6 for r in batched) and summary["questions"] == 3
    # The eval's decoding (prompt widths rounded up) is `LM.generate`'s.
    ids = build_prompt(lm.tokenizer, QUESTIONS[0], ReasoningEvalConfig())[1]
    assert lm.tokenizer.decode(lm.generate([ids], max_new_tokens=6)[0]) == batched[0].generations[0]

    # Bitune with fresh adapters (B = 0) and alpha fixed at 0 decodes exactly like the plain model.
    bcfg = BituneConfig(learn_alpha=False, w_init=0.0)
    trainable = init_trainable(lm.params, lm.cfg, bcfg, jax.random.key(0))
    bitune_model = TrainedModel(lm, "bitune", trainable, bitune=bcfg)
    bitune, _ = evaluate(bitune_model, QUESTIONS, ReasoningEvalConfig(batch_size=3, **greedy))
    assert [r.generations for r in bitune] == [r.generations for r in batched]
