"""`restore_run` and `TrainedModel`: a restored run scores and generates as the trainer's own state does (a full
fine-tune, LoRA and Bitune), PEFT merges to the adapted model's logits and Bitune refuses to, a workdir without
checkpoints is an error naming it, and restoring imports neither lm-eval nor the training loop."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bitune_jax as bj
from bitune_jax import export
from bitune_jax.api import LM
from bitune_jax.bitune import BituneConfig
from bitune_jax.engine import Request
from bitune_jax.eval.datasets import MCItem
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.multiple_choice import answer_scorer, score_choices, score_continuations
from bitune_jax.eval.reasoning import ReasoningEvalConfig, evaluate, generate_fn
from bitune_jax.models.transformer import forward, init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from bitune_jax.train.restore import model_from_state, restore_run
from tests.tiny_models import TINY

CFG = TINY["llama"]
GREEDY = ReasoningEvalConfig(temperature=0.0, top_p=1.0, max_new_tokens=6)


def perturbed(tree, key: int, scale: float = 0.1):
    """Fresh adapters moved off the identity (LoRA's B = 0), so they change what the model computes."""
    keys = iter(jax.random.split(jax.random.key(key), len(jax.tree.leaves(tree))))
    return jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape, x.dtype), tree)


def tiny_model(kind: str) -> TrainedModel:
    base = init_params(CFG, jax.random.key(0), scale=0.5)
    objective = Objective(
        kind, CFG, peft=PeftConfig() if kind == "peft" else None, bitune=BituneConfig() if kind == "bitune" else None
    )
    trainable, frozen = objective.split(base, jax.random.key(1))
    trainable = trainable if kind == "full" else perturbed(trainable, 2)
    return model_from_state(objective, trainable, frozen, LM(CFG, {}))


def test_restoring_imports_neither_lm_eval_nor_the_training_loop():
    code = (
        "import sys, bitune_jax.train.restore, bitune_jax.eval, bitune_jax.eval.gsm8k, bitune_jax.train.evaluation; "
        "print(sorted(m for m in ('lm_eval', 'bitune_jax.train.loop') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_from_state_holds_what_each_objective_trains():
    full, peft, bitune = tiny_model("full"), tiny_model("peft"), tiny_model("bitune")
    assert (full.kind, full.trainable, full.adapters) == ("full", None, None)  # the weights are `lm.params`
    assert peft.adapters is peft.trainable and set(peft.trainable) == {"layers"} and peft.bitune is None
    assert bitune.adapters is None and {"causal", "bidir", "mix"} <= set(bitune.trainable) and bitune.peft is None
    for m in (full, peft, bitune):  # the base (or the full weights) is what every forward starts from
        assert jax.tree.structure(m.lm.params) == jax.tree.structure(init_params(CFG, jax.random.key(0)))
    plain = LM(CFG, full.lm.params)
    assert TrainedModel.of(plain).lm is plain and TrainedModel.of(peft) is peft


def test_kinds_are_checked():
    lm = LM(CFG, {})
    with pytest.raises(ValueError, match="a peft model needs trainable and peft"):
        TrainedModel(lm, "peft")
    with pytest.raises(ValueError, match="a bitune model needs bitune"):
        TrainedModel(lm, "bitune", trainable={})
    with pytest.raises(ValueError, match="trainable must be None"):
        TrainedModel(lm, "full", trainable={})
    with pytest.raises(ValueError, match="unknown kind 'lora'"):
        TrainedModel(lm, "lora")


def test_peft_merges_to_the_adapted_models_logits_and_scores_and_generates_as_it():
    model = tiny_model("peft")
    tokens = jnp.asarray(np.random.RandomState(0).randint(1, CFG.vocab_size, (2, 11)), jnp.int32)
    adapted, _ = forward(model.lm.params, tokens, CFG, adapters=model.trainable, peft=model.peft)
    merged = model.merged()
    np.testing.assert_allclose(merged.logits(tokens), adapted, atol=1e-4, rtol=0)  # float32 rounding: logits ~10
    assert np.abs(np.asarray(model.lm.logits(tokens) - adapted)).max() > 1e-2  # the adapters change the model

    pairs = [([5, 9, 14, 3], [7, 8]), ([11, 4], [6]), ([21, 22, 23], [24, 25, 26])]
    kwargs = dict(pad_id=0, max_len=CFG.max_seq_len)
    got = score_continuations(pairs, answer_scorer(model), **kwargs)
    want = score_continuations(pairs, answer_scorer(merged), **kwargs)
    # A sum of up to 3 log-probs of magnitude ~8 each, from logits held to 1e-4 above: 1e-5 absolute was below the
    # float32 rounding of merged vs unmerged kernels (2.1e-5 seen with XLA:CPU's LLVM optimizations off).
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in want], atol=1e-4, rtol=0)
    prompts = [[5, 9, 14, 3], [11, 4]]
    requests = [Request(p, GREEDY.max_new_tokens) for p in prompts]
    assert [c.tokens for c in generate_fn(model, GREEDY)(requests)] == [
        c.tokens for c in generate_fn(merged, GREEDY)(requests)
    ]


def test_bitune_has_no_merged_form():
    with pytest.raises(ValueError, match="a Bitune model has no merged form"):
        tiny_model("bitune").merged()
    full = tiny_model("full")
    assert full.merged() is full.lm


def test_a_workdir_without_checkpoints_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}: not a bitune_jax run directory")):
        restore_run(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'checkpoints'}: no checkpoint saved yet")):
        restore_run(tmp_path)
    assert not list((tmp_path / "checkpoints").iterdir())  # nothing created on the way


# ------------------------------------------------------------------------------------- integration: tiny runs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.train.tiny_run import smollm2_tokenizer, write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


MC_ITEMS = [  # one item of one-token choices (the shared-row scorer), two of longer ones (a row per choice)
    MCItem(question="Pick a letter.", choices=("A", "B", "C"), label=0, file="t", line=1),
    MCItem(question="What is 2 + 3?", choices=("five apples", "four pears"), label=0, file="t", line=2),
    MCItem(question="The sky is", choices=("blue today", "green", "made of cheese"), label=0, file="t", line=3),
]


def trained_run(model_dir, workdir, kind, monkeypatch) -> tuple[dict, TrainedModel, object]:
    """A tiny run whose held-out eval after its last epoch is spied on: `(summary, the model the trainer evaluated
    from its live state, the trainer's HeldOutEval)`. The final checkpoint holds that same state."""
    from bitune_jax.train import evaluation
    from bitune_jax.train.loop import run
    from tests.train.tiny_run import tiny_config

    seen = []
    original = evaluation.HeldOutEval.run

    def spy(self, objective, trainable, frozen, lm, out_path=None):
        seen.append((model_from_state(objective, jax.device_get(trainable), frozen, lm), self))
        return original(self, objective, trainable, frozen, lm, out_path)

    monkeypatch.setattr(evaluation.HeldOutEval, "run", spy)
    overrides = {
        "objective": kind,
        "train.epochs": 2,
        "train.lr": 3e-2,
        "saturation.enabled": False,
        "eval.every_epochs": 2,
        "eval.num_items": 3,
        "eval.max_new_tokens": 12,
    }
    summary = run(tiny_config(model_dir, workdir, **overrides))
    monkeypatch.undo()
    assert len(seen) == 1  # after epoch 2, the last
    return summary, *seen[0]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["full", "peft", "bitune"])
def test_a_restored_run_scores_and_generates_as_the_trainers_state(model_dir, tmp_path, monkeypatch, kind):
    summary, trainer, held_out = trained_run(model_dir, tmp_path / kind, kind, monkeypatch)
    restored = restore_run(tmp_path / kind)
    assert (restored.kind, restored.step) == (kind, summary["steps"])

    records, _ = evaluate(restored, held_out.items, held_out.sampling, prompts=held_out.prompts)
    logged = (tmp_path / kind / "eval" / "epoch_0002.jsonl").read_text().splitlines()[1:]
    assert [r.generations for r in records] == [json.loads(x)["generations"] for x in logged]  # the trainer's eval
    again, _ = evaluate(trainer, held_out.items, held_out.sampling, prompts=held_out.prompts)
    assert [r.generations for r in records] == [r.generations for r in again]

    scores, _ = score_choices(restored, MC_ITEMS)
    want, _ = score_choices(trainer, MC_ITEMS)
    np.testing.assert_allclose(
        np.concatenate([s.logprob_sum for s in scores]),
        np.concatenate([s.logprob_sum for s in want]),
        atol=1e-6,
        rtol=0,
    )
    base, _ = score_choices(bj.load(model_dir), MC_ITEMS)
    trained = np.concatenate([s.logprob_sum for s in scores])
    assert np.abs(trained - np.concatenate([s.logprob_sum for s in base])).max() > 1e-3  # the training is there

    if kind == "bitune":
        with pytest.raises(SystemExit, match="is a Bitune run: it has no merged Hugging Face form"):
            export.main([str(tmp_path / kind), str(tmp_path / "exported")])
        assert not (tmp_path / "exported").exists()
    else:  # the hand-off to vLLM: what it reads, and the same model
        out = export.main([str(tmp_path / kind), str(tmp_path / "exported")])
        names = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"}
        assert names <= {p.name for p in out.iterdir()}
        tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
        assert tokenizer_config["chat_template"] == restored.lm.tokenizer.chat_template
        generation = json.loads((out / "generation_config.json").read_text())
        assert generation["eos_token_id"] in (list(restored.lm.eos_ids), restored.lm.eos_ids[0])
        assert (generation["do_sample"], generation["temperature"], generation["top_p"]) == (True, 0.6, 0.95)
        ids = np.asarray([restored.lm.tokenizer.encode("Question: What is 2 + 3?")], np.int32)
        np.testing.assert_allclose(bj.load(out).logits(ids), restored.merged().logits(ids), atol=1e-5, rtol=0)

    if kind == "bitune":
        with pytest.raises(ValueError, match="a Bitune model has no merged form"):
            restored.merged()
    elif kind == "peft":
        ids = jnp.asarray([restored.lm.tokenizer.encode("Question: What is 2 + 3?\n\nAnswer: 5")], jnp.int32)
        adapted, _ = forward(restored.lm.params, ids, restored.lm.cfg, adapters=restored.trainable, peft=restored.peft)
        np.testing.assert_allclose(restored.merged().logits(ids), adapted, atol=1e-5, rtol=0)
    else:
        first = min(int(p.name) for p in (tmp_path / kind / "checkpoints").iterdir() if p.name.isdigit())
        assert restore_run(tmp_path / kind, first).step == first
        with pytest.raises(FileNotFoundError, match="no checkpoint at step 999"):
            restore_run(tmp_path / kind, 999)
        from tests.train.tiny_run import write_tiny_model

        tok = restored.lm.tokenizer
        other = write_tiny_model(tmp_path / "other", tok, vocab_size=tok.vocab_size + 3)  # another embedding
        with pytest.raises(ValueError, match="the checkpoint's full weights do not fit this model"):
            restore_run(tmp_path / kind, model=str(other))
