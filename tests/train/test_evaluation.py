"""Held-out eval inside training: when it runs, what it logs, and that it generates with the weights being trained."""

import dataclasses
import json

import jax
import numpy as np
import pytest

import bitune_jax as bj
from bitune_jax.bitune import bitune_generate
from bitune_jax.data import DataError, Record, encode_record
from bitune_jax.peft import merge
from bitune_jax.train import evaluation
from bitune_jax.train.loop import run
from bitune_jax.train.setup import objective_from_config
from bitune_jax.train.spec import RunSpec
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def eval_config(model_dir, workdir, **overrides):
    return tiny_config(
        model_dir,
        workdir,
        **{
            "saturation.enabled": False,
            "eval.every_epochs": 2,
            "eval.num_items": 3,
            "eval.max_new_tokens": 12,
            **overrides,
        },
    )


def test_eval_runs_at_start_every_k_epochs_and_at_the_end(model_dir, tmp_path):
    summary = run(eval_config(model_dir, tmp_path, **{"train.epochs": 5, "eval.at_start": True}))
    evaluated = [i + 1 for i, h in enumerate(summary["history"]) if "eval_avg@n" in h]
    assert evaluated == [2, 4, 5]  # every 2nd epoch, and the last one
    assert set(summary["start_eval"]) == {"eval_avg@n", "eval_pass@1", "eval_mean_length", "eval_terminated_fraction"}
    for h in summary["history"]:
        if "eval_avg@n" in h:
            assert 0.0 <= h["eval_avg@n"] <= 1.0 and 1 <= h["eval_mean_length"] <= 12
    files = sorted(p.name for p in (tmp_path / "eval").iterdir())
    assert files == ["epoch_0000.jsonl", "epoch_0002.jsonl", "epoch_0004.jsonl", "epoch_0005.jsonl"]
    lines = (tmp_path / "eval" / "epoch_0005.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["summary"]["questions"] == 3 and len(lines) == 4
    first = json.loads(lines[1])
    assert first["source"].startswith("<synthetic test seed=0>:") and first["gold"].isdigit()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["epoch"] for r in rows if r["scope"] == "epoch" and "epoch/eval_avg@n" in r]
    assert logged == [0, 2, 4, 5]


def test_eval_is_off_by_default(model_dir, tmp_path):
    summary = run(tiny_config(model_dir, tmp_path, **{"train.epochs": 1}))
    assert not any("eval_avg@n" in h for h in summary["history"]) and summary["start_eval"] is None
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("kind", ["full", "peft", "bitune"])
def test_eval_generates_with_the_trained_weights(model_dir, tmp_path, kind):
    """The eval's generations equal generating directly with the same weights (adapters made non-zero first)."""
    config = eval_config(model_dir, tmp_path, objective=kind)
    lm = bj.load(str(model_dir))
    objective = objective_from_config(RunSpec.from_config(config), lm.cfg)
    trainable, frozen = objective.split(lm.params, jax.random.key(0))
    trainable = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), trainable)
    held_out = evaluation.HeldOutEval.from_config(config, lm.tokenizer)
    held_out.run(objective, trainable, frozen, dataclasses.replace(lm, params={}), tmp_path / "gen.jsonl")
    got = [json.loads(x)["generations"][0] for x in (tmp_path / "gen.jsonl").read_text().splitlines()[1:]]

    prompts = [ids for _, ids in held_out.prompts]
    records = evaluation.held_out_records(config)
    assert prompts == [encode_record(lm.tokenizer, r, "chat")[0] for r in records]  # the training rendering
    if kind == "bitune":
        outs = bitune_generate(
            frozen,
            trainable,
            prompts,
            lm.cfg,
            objective.bitune,
            max_new_tokens=12,
            eos_ids=lm.eos_ids,
            pad_id=lm.pad_id,
        )
    else:
        params = trainable if kind == "full" else merge(frozen, trainable, objective.peft)
        outs = [dataclasses.replace(lm, params=params).generate([p], max_new_tokens=12)[0] for p in prompts]
    want = [lm.tokenizer.decode(np.asarray(o).tolist()) for o in outs]
    assert got == want
    assert len(set(got)) > 1 or kind == "full"  # random adapters: not one degenerate string for every prompt


def test_gold_answer_and_bad_eval_config(model_dir, tmp_path):
    user = {"role": "user", "content": "q"}
    r = Record(messages=[user, {"role": "assistant", "content": "so \\boxed{7} then \\boxed{12}"}], file="f", line=3)
    assert evaluation.gold_answer(r) == "12"
    assert evaluation.gold_answer(dataclasses.replace(r, meta={"answer": 5})) == "5"
    with pytest.raises(DataError, match="f:3"):
        evaluation.gold_answer(Record(messages=[user, {"role": "assistant", "content": "no box"}], file="f", line=3))
    with pytest.raises(ValueError, match="config.eval.path is empty"):
        run(eval_config(model_dir, tmp_path, **{"eval.source": "jsonl"}))
    with pytest.raises(ValueError, match="config.eval.source"):
        run(eval_config(model_dir, tmp_path, **{"eval.source": "hub"}))


def test_mmlu_forgetting_eval_runs_at_start_and_after_the_last_epoch(model_dir, tmp_path):
    """PEFT run with eval.mmlu: epoch 0 (fresh adapters, B = 0) scores what the standalone eval gives the base model;
    the last epoch is scored again with the trained adapters merged in. Too few dev rows fail before the model loads."""
    from bitune_jax.eval.mmlu import evaluate_mmlu, read_mmlu
    from tests.eval.test_mmlu import rows, write

    test, dev = tmp_path / "test.jsonl", tmp_path / "dev.jsonl"
    write(test, rows("anatomy", 3) + rows("virology", 2))
    write(dev, rows("anatomy", 2, offset=10) + rows("virology", 2, offset=10))
    mmlu = {
        "eval.mmlu.test": str(test),
        "eval.mmlu.dev": str(dev),
        "eval.mmlu.shots": 2,
        "eval.at_start": True,
        "eval.every_epochs": 0,
    }
    summary = run(eval_config(model_dir, tmp_path / "run", objective="peft", **mmlu))
    base = evaluate_mmlu(bj.load(model_dir), read_mmlu(test), read_mmlu(dev), shots=2)
    assert summary["start_eval"] == {"mmlu_macro": base["mmlu_macro"], "mmlu_micro": base["mmlu_micro"]}
    assert [("mmlu_macro" in h) for h in summary["history"]] == [False, False, False, True]
    with pytest.raises(DataError, match="subject 'anatomy' has 2 dev rows, fewer than shots=3"):
        run(eval_config(model_dir, tmp_path / "few", objective="peft", **{**mmlu, "eval.mmlu.shots": 3}))
