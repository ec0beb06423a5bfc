"""The Bitune study driver on a tiny model: data written once per order, every arm trained and scored by
log-likelihood, records paired by item across arms and orders, and the report built from the records alone."""

import json
import shutil
import types

import numpy as np
import pytest

from bitune_jax.eval.multiple_choice import score_choices
from bitune_jax.tasks import two_hop
from experiments import study_bitune
from experiments.study import load_config_module, point_config, run_points
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration

ARMS = {
    "lora": {"objective": "peft"},
    "bitune": {"objective": "bitune", "bitune.bidirectional": True},
    "bitune_causal": {"objective": "bitune", "bitune.bidirectional": False},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def tiny_study(tmp_path):
    data = tmp_path / "data"
    return types.SimpleNamespace(
        ORDERS=("reverse", "chain"),
        NUM_FACTS=4,
        DATA_SEED=0,
        TRAIN_ITEMS=12,
        TEST_ITEMS=6,
        train_path=lambda order, k=4: str(data / f"train_{order}_k{k}.jsonl"),
    )


def tiny_study_config(model_dir, tmp_path):
    return tiny_config(
        model_dir,
        tmp_path / "runs",
        **{
            "data.source": "jsonl",
            "data.template": "plain",
            "data.batch_size": 2,
            "data.num_samples": 0,
            "data.max_len": 160,
            "data.pad_multiple": 32,
            "train.epochs": 1,
            "train.max_updates": 2,
            "checkpoint.every_steps": 0,
            "saturation.enabled": False,
            "eval.every_epochs": 0,
        },
    )


def test_grid_scores_every_arm_pairs_items_and_reports(model_dir, tmp_path):
    module = tiny_study(tmp_path)
    tests = study_bitune.write_data(module)
    assert set(tests) == {("reverse", 4), ("chain", 4)}
    reverse_text = (tmp_path / "data" / "train_reverse_k4.jsonl").read_text()
    assert len(reverse_text.splitlines()) == 12
    study_bitune.write_data(module)  # a second call leaves the bytes (and so the records' data hash) alone
    assert (tmp_path / "data" / "train_reverse_k4.jsonl").read_text() == reverse_text
    problems = lambda order: [r.meta["problem"] for r in tests[(order, 4)]]
    assert problems("reverse") == problems("chain")  # the same held-out problems in both orders

    config = tiny_study_config(model_dir, tmp_path)
    sweep = [
        {
            **ARMS[arm],
            "seed": 42,
            "data.train_path": module.train_path(order),
            "workdir": str(tmp_path / "runs" / f"{arm}_{order}_seed42"),
        }
        for order in module.ORDERS
        for arm in ARMS
    ]
    records = tmp_path / "report" / "points"
    summaries = run_points(config, sweep, record_dir=records, evaluate=study_bitune.grid_evaluate(tests))
    for s in summaries:
        items = s["final_eval_items"]
        assert len(items["correct"]) == 6 and set(items["correct"]) <= {0, 1}
        assert all(np.isfinite(items["gold_logprob"])) and items["loss_curve"]["update"]
    lora = next(s for s in summaries if s["point"]["workdir"].endswith("lora_reverse_seed42"))
    assert lora.get("alpha_k") is None
    bitune = next(s for s in summaries if s["point"]["workdir"].endswith("/bitune_reverse_seed42"))
    assert len(np.ravel(bitune["alpha_k"])) == 2  # per layer of the tiny model

    # the plain arm's score equals scoring its trained model directly with the same rendering
    from bitune_jax.train.restore import restore_run

    direct, _ = score_choices(
        restore_run(lora["point"]["workdir"], dtype="float32", attn_impl="xla"),
        [two_hop.to_mc_item(r) for r in tests[("reverse", 4)]],
        study_bitune.SCORING,
    )
    assert [int(d.pred == d.label) for d in direct] == lora["final_eval_items"]["correct"]
    np.testing.assert_allclose([d.logprob_sum[d.label] for d in direct], lora["final_eval_items"]["gold_logprob"])

    shutil.rmtree(tmp_path / "runs")  # a clean checkout: records only, nothing reruns
    again = run_points(config, sweep, record_dir=records, evaluate=lambda *_: pytest.fail("reran a recorded point"))
    assert again == summaries

    rows = study_bitune.seed_rows(summaries)
    assert {(r["arm"], r["order"]) for r in rows} == {(a, o) for a in ARMS for o in module.ORDERS}
    comp = study_bitune.comparisons(summaries)
    names = {(c["comparison"], c["order"]) for c in comp}
    assert ("bitune - lora", "reverse") in names and ("bitune - bitune_causal", "chain") in names
    assert ("(bitune - lora): reverse - chain", "both") in names
    assert all(c["items"] == 6 for c in comp)
    text = study_bitune.markdown(study_bitune.arm_table(rows), comp, 6)
    assert "| reverse | Bitune, causal only |" in text and "resolved" in text
    assert study_bitune.plot(rows, summaries, tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(comp)  # the report's numbers are plain JSON

    # a study under way: the report is built from the records alone and names the point not run yet
    unrun = {**sweep[0], "seed": 43, "workdir": str(tmp_path / "runs" / "lora_reverse_seed43")}
    text, table = study_bitune.grid_report(config, [*sweep, unrun], tmp_path / "report", tests, run_missing=False)
    assert not (tmp_path / "runs").exists()  # nothing ran
    assert text.endswith("**Study under way**: 1 point(s) not run yet: lora_reverse_seed43.")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["missing"] == ["lora_reverse_seed43"] and results["table"] == json.loads(json.dumps(table))
    assert results["comparisons"] == json.loads(json.dumps(comp))
    assert (tmp_path / "report" / "figure.png").exists()


def test_pilot_scores_every_checkpoint_and_reports_the_band(model_dir, tmp_path):
    module = tiny_study(tmp_path)
    module.PILOT_FACTS = (4,)
    module.PILOT_ITEMS = 4
    workdir = tmp_path / "runs" / "pilot_lora_reverse_k4"
    module.get_pilot = lambda: [
        {
            **ARMS["lora"],
            "seed": 42,
            "data.train_path": module.train_path("reverse", 4),
            "train.max_updates": 2,
            "checkpoint.every_steps": 1,
            "checkpoint.keep": 2,
            "workdir": str(workdir),
        }
    ]
    tests = study_bitune.write_data(module)
    out = tmp_path / "report"
    study_bitune.pilot_report(module, tiny_study_config(model_dir, tmp_path), out, tests)
    curve = json.loads((out / "pilot.json").read_text())["pilot_lora_reverse_k4"]
    assert set(curve["accuracy_by_update"]) == {"1", "2"} and curve["items"] == 4
    for step in (1, 2):  # each checkpoint's own score, on the first PILOT_ITEMS problems
        scored = study_bitune.score_workdir(workdir, tests[("reverse", 4)][:4], step)
        assert curve["accuracy_by_update"][str(step)] == pytest.approx(np.mean(scored["correct"]))
    table = (out / "pilot.md").read_text()
    assert "| run | update 1 | update 2 | loss, last 50 updates |" in table and "| pilot_lora_reverse_k4 |" in table
    shutil.rmtree(tmp_path / "runs")  # the pilot's record stands in for its run
    study_bitune.pilot_report(module, tiny_study_config(model_dir, tmp_path), out, tests)
    assert json.loads((out / "pilot.json").read_text())["pilot_lora_reverse_k4"] == curve


def test_pooled_differences_resample_within_seed():
    """Two seeds of two arms: the pooled difference is the mean over all items, and a seed's items stay together."""
    summaries = []
    for seed, lora, bitune in ((42, [0, 0, 1, 1], [1, 1, 1, 1]), (43, [0, 1, 0, 1], [0, 1, 1, 1])):
        for arm, correct in (("lora", lora), ("bitune", bitune)):
            summaries.append(
                {
                    "point": {
                        "seed": seed,
                        "data.train_path": "d/train_reverse_k6.jsonl",
                        "workdir": f"r/{arm}_reverse_seed{seed}",
                    },
                    "final_eval_items": {"correct": correct},
                }
            )
    comp = study_bitune.comparisons(summaries)
    gain = next(c for c in comp if c["comparison"] == "bitune - lora")
    assert gain["estimate"] == pytest.approx(3 / 8) and gain["items"] == 8


def test_the_v2_config_names_real_keys_and_its_pilot_checkpoints():
    module = load_config_module("experiments/configs/study_bitune_v2_smollm2.py")
    config = module.get_config()
    sweep = module.get_sweep()
    assert len(sweep) == len(module.ARMS) * len(module.ORDERS) * len(module.SEEDS) == 18
    for point in sweep + module.get_pilot():
        point_config(config, point)
        assert study_bitune.point_task(point)[0] in module.ORDERS
    assert {study_bitune._arm(p) for p in sweep} == set(module.ARMS)
    assert all(p["checkpoint.every_steps"] == module.PILOT_EVERY for p in module.get_pilot())
