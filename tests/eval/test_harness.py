"""lm-evaluation-harness over bitune_jax: `simple_evaluate` offline on tasks written by the test (one multiple-choice,
one generate_until) for a plain model, a PEFT run and a Bitune run. The plain model's log-likelihoods equal lm-eval's
own `hf` model (transformers) on the same directory within 1e-4, and its accuracy equals the project's own scorer;
the PEFT run equals a forward with the adapters beside the base; the Bitune run equals `score_choices`."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

import bitune_jax as bj
from bitune_jax.eval.datasets import read_mc
from bitune_jax.eval.harness import BituneJaxLM
from bitune_jax.eval.multiple_choice import MCConfig, next_token_logprobs, score_choices
from bitune_jax.models.transformer import forward
from bitune_jax.train.loop import run
from bitune_jax.train.restore import restore_run
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

MC_ROWS = [
    {"question": "What color is the sky?", "choices": ["blue", "green", "red"], "label": 0},
    {"question": "Two plus two is", "choices": ["three", "four"], "label": 1},
    {"question": "Cats say", "choices": ["woof", "meow", "moo", "quack"], "label": 1},
    {"question": "The sun rises in the", "choices": ["west", "east"], "label": 1},
    {"question": "Ice is", "choices": ["hot", "cold", "loud"], "label": 1},
]
GEN_ROWS = [
    {"prompt": "Say hi:", "answer": "hi"},
    {"prompt": "Count: 1 2 3", "answer": "4"},
    {"prompt": "The end", "answer": "."},
]
MC_FORMAT = MCConfig(template="Question: {question}\nAnswer:", add_bos=False)  # the task YAML's doc_to_text


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    model_dir = write_tiny_model(root / "model", smollm2_tokenizer())
    mc, gen = root / "mc.jsonl", root / "gen.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in MC_ROWS))
    gen.write_text("".join(json.dumps(r) + "\n" for r in GEN_ROWS))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
""")
    (tasks / "tiny_gen.yaml").write_text(f"""task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {gen}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""")
    return model_dir, mc, TaskManager(include_path=str(tasks))


def evaluate(model, tasks, manager, **kwargs):
    out = simple_evaluate(model=model, tasks=tasks, task_manager=manager, log_samples=True, **kwargs)
    samples = {t: sorted(out["samples"][t], key=lambda s: s["doc_id"]) for t in tasks}
    return out["results"], samples


def choice_logprobs(samples):
    return [[r[0][0] for r in s["resps"]] for s in samples]


def test_plain_model_equals_transformers_and_the_project_scorer(setup, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir, mc, manager = setup
    ours, ours_samples = evaluate(
        BituneJaxLM(pretrained=str(model_dir), batch_size=4), ["tiny_mc", "tiny_gen"], manager
    )
    theirs, their_samples = evaluate(
        "hf", ["tiny_mc", "tiny_gen"], manager, model_args=f"pretrained={model_dir},dtype=float32", device="cpu"
    )
    np.testing.assert_allclose(
        np.concatenate(choice_logprobs(ours_samples["tiny_mc"])),
        np.concatenate(choice_logprobs(their_samples["tiny_mc"])),
        atol=1e-4,
        rtol=0,
    )
    assert ours["tiny_mc"]["acc,none"] == theirs["tiny_mc"]["acc,none"]
    _, summary = score_choices(bj.load(model_dir), read_mc(mc), MC_FORMAT)
    assert summary["accuracy"] == pytest.approx(ours["tiny_mc"]["acc,none"])
    generated = [s["resps"][0][0] for s in ours_samples["tiny_gen"]]
    assert generated == [s["resps"][0][0] for s in their_samples["tiny_gen"]]  # greedy, cut at the stop string
    assert all("\n" not in g for g in generated) and "exact_match,none" in ours["tiny_gen"]


def trained_run(model_dir, workdir, objective):
    run(
        tiny_config(
            model_dir,
            workdir,
            **{"objective": objective, "train.epochs": 1, "train.lr": 3e-2, "saturation.enabled": False},
        )
    )
    return workdir


def test_peft_run_scores_with_its_adapters(setup, tmp_path, monkeypatch):
    """Checked against a forward of the base with the run's adapters."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir, mc, manager = setup
    workdir = trained_run(model_dir, tmp_path / "peft", "peft")
    model = BituneJaxLM(run=str(workdir), batch_size=4)
    _, samples = evaluate(model, ["tiny_mc"], manager)
    trained, base = restore_run(workdir), bj.load(model_dir)
    peft = trained.peft
    tok = base.tokenizer
    expected = []
    for row in MC_ROWS:
        context = f"Question: {row['question']}\nAnswer:"
        ctx, sums = tok.encode(context, add_bos=False), []
        for choice in row["choices"]:
            ids = tok.encode(context + " " + choice, add_bos=False)
            logits, _ = forward(base.params, jnp.asarray([ids]), base.cfg, adapters=trained.trainable, peft=peft)
            sums.append(float(np.asarray(next_token_logprobs(logits, jnp.asarray([ids])))[0, len(ctx) - 1 : -1].sum()))
        expected.append(sums)
    got = choice_logprobs(samples["tiny_mc"])
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected), atol=1e-4, rtol=0)
    _, base_samples = evaluate(BituneJaxLM(pretrained=str(model_dir), batch_size=4), ["tiny_mc"], manager)
    assert not np.allclose(np.concatenate(got), np.concatenate(choice_logprobs(base_samples["tiny_mc"])), atol=1e-3)


def test_bitune_run_scores_and_generates_through_the_mixed_cache(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir, mc, manager = setup
    workdir = trained_run(model_dir, tmp_path / "bitune", "bitune")
    results, samples = evaluate(BituneJaxLM(run=str(workdir), batch_size=4), ["tiny_mc", "tiny_gen"], manager)
    scores, summary = score_choices(restore_run(workdir), read_mc(mc), MC_FORMAT)
    np.testing.assert_allclose(
        np.concatenate(choice_logprobs(samples["tiny_mc"])),
        np.concatenate([s.logprob_sum for s in scores]),
        atol=1e-5,
        rtol=0,
    )
    assert summary["accuracy"] == pytest.approx(results["tiny_mc"]["acc,none"])
    assert len(samples["tiny_gen"]) == len(GEN_ROWS) and "exact_match,none" in results["tiny_gen"]


def test_generate_until_without_until_and_with_no_room_for_the_prompt(setup):
    """No `until` (lm-eval then stops at the EOS text, which decodes to ""): no empty-separator crash, and the
    text is cut at nothing. max_gen_toks that fill max_length: refused by name, not decoded over the limit."""
    from types import SimpleNamespace

    model_dir, _, _ = setup
    lm = BituneJaxLM(pretrained=str(model_dir), max_length=64, batch_size=2)
    request = SimpleNamespace(args=("Say hi:", {"until": [], "max_gen_toks": 4}))
    (text,) = lm.generate_until([request])
    assert isinstance(text, str)
    request = SimpleNamespace(args=("Say hi:", {"until": ["\n"], "max_gen_toks": 64}))
    with pytest.raises(
        ValueError, match=r"max_gen_toks=64 must be >= 1 and leave room for the prompt in max_length=64"
    ):
        lm.generate_until([request])
